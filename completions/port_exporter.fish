complete -c port_exporter -s o -l output -d 'Write the metrics atomically to FILE instead of stdout' -r -F
complete -c port_exporter -l serve -d 'Serve the metrics over HTTP at ADDR instead [default ADDR: :8000]' -r
complete -c port_exporter -l web.config.file -l web-config-file -d 'TLS, client certificates and basic auth for --serve, from FILE' -r -F
complete -c port_exporter -s p -l ports -d 'Report only these ports, such as 22,80,443,8000-9000 [default: all]' -r
complete -c port_exporter -s x -l exclude -d 'Never report these ports, such as 32768-60999 (same form as --ports)' -r
complete -c port_exporter -s m -l method -d 'How to find the open ports' -r -f -a "auto\t'netlink, falling back to procfs if netlink is refused; bind where neither exists'
netlink\t'The kernel\'s listener table over NETLINK_SOCK_DIAG, as ss asks for it: exact, the fastest, no privilege'
procfs\t'/proc/net/tcp and tcp6: exact, but slower the more connections the host has'
bind\t'Try to bind each port, in parallel (--threads): portable but slow; counts ports that are only bound (outgoing connections, TIME_WAIT) as open, holds each free port for a moment, and checks ports below 1024 only as root or with CAP_NET_BIND_SERVICE'"
complete -c port_exporter -s j -l threads -d 'Threads for --method bind [default: one per CPU]' -r
complete -c port_exporter -l generate -d 'Print the man page, a shell completion script or alerting rules, then exit' -r -f -a "man\t'The man page, in roff (man/port_exporter.1)'
bash\t'Bash completion (completions/port_exporter.bash)'
zsh\t'Zsh completion (completions/_port_exporter)'
fish\t'Fish completion (completions/port_exporter.fish)'
elvish\t'Elvish completion (completions/port_exporter.elv)'
powershell\t'PowerShell completion (completions/_port_exporter.ps1)'
rules\t'Prometheus alerting rules (src/rules.yml)'"
complete -c port_exporter -l include-closed -d 'Also write 0 for each selected port that is closed (needs --ports)'
complete -c port_exporter -s v -l verbose -d 'Say on stderr which method ran, how long it took, and what it found'
complete -c port_exporter -s h -l help -d 'Print help (see more with \'--help\')'
complete -c port_exporter -s V -l version -d 'Print version'

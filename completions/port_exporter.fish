complete -c port_exporter -s o -l output -d 'Write the metrics atomically to FILE instead of stdout' -r -F
complete -c port_exporter -l serve -d 'Serve the metrics over HTTP at ADDR instead [default ADDR: :8000]' -r
complete -c port_exporter -l web.config.file -l web-config-file -d 'TLS, client certificates and basic auth for --serve, from FILE' -r -F
complete -c port_exporter -s p -l ports -d 'Report only these ports, such as 22,80,443,8000-9000 [default: all]' -r
complete -c port_exporter -s x -l exclude -d 'Never report these ports, such as 32768-60999 (same form as --ports)' -r
complete -c port_exporter -l protocol -d 'Scan these protocols: tcp, udp or tcp,udp [default: tcp]' -r -f -a "tcp\t'TCP sockets in LISTEN state (ss -Htln)'
udp\t'UDP sockets bound and not connected to a peer (ss -Huln)'"
complete -c port_exporter -l labels -d 'Label each sample with these, such as scope,process [default: port only]' -r -f -a "protocol\t'tcp or udp (always there when UDP is scanned)'
address\t'The local address, as ss prints it without brackets: 0.0.0.0, ::, 127.0.0.1, fe80::1%eth0'
scope\t'any (a wildcard address), loopback, link-local or specific: is it exposed?'
user\t'The socket\'s owner, by name (the number when none resolves)'
process\t'The command name of the process holding the socket (the lowest pid), "" when it cannot be found'"
complete -c port_exporter -l netns -d 'Scan every network namespace of the host: all (needs root)' -r -f -a "all\t'Every network namespace with a process or a name, each entered in turn'"
complete -c port_exporter -l format -d 'Print as prometheus, table or json [default: prometheus; table with --watch]' -r -f -a "prometheus\t'The Prometheus text format, for node_exporter or a scrape'
table\t'An aligned table of every listener, for people'
json\t'A JSON array of every listener, for scripts (jq)'"
complete -c port_exporter -l watch -d 'List the listeners, then print each that opens or closes, scanning every INTERVAL [default INTERVAL: 1s]' -r
complete -c port_exporter -s m -l method -d 'How to find the open ports' -r -f -a "auto\t'On Linux netlink, falling back to procfs if netlink is refused (--verbose says so); bind on other systems'
netlink\t'The kernel\'s listener table over NETLINK_SOCK_DIAG, as ss asks for it: exact, the fastest, no privilege'
procfs\t'/proc/net/tcp and tcp6: exact, but slower the more connections the host has'
bind\t'Try to bind each port, in parallel (--threads): portable but slow; counts ports that are only bound (outgoing connections, TIME_WAIT) as open, holds each free port for a moment, and checks ports below 1024 only as root or with CAP_NET_BIND_SERVICE'"
complete -c port_exporter -s j -l threads -d 'Threads for --method bind [default: one per CPU]' -r
complete -c port_exporter -l generate -d 'Print the man page, a shell completion script, alerting rules or a systemd unit, then exit' -r -f -a "man\t'The man page, in roff (man/port_exporter.1)'
bash\t'Bash completion (completions/port_exporter.bash)'
zsh\t'Zsh completion (completions/_port_exporter)'
fish\t'Fish completion (completions/port_exporter.fish)'
elvish\t'Elvish completion (completions/port_exporter.elv)'
powershell\t'PowerShell completion (completions/_port_exporter.ps1)'
rules\t'Prometheus alerting rules (src/rules.yml)'
service\t'systemd: the textfile job, run by the timer (port_exporter.service)'
timer\t'systemd: its timer, every minute (port_exporter.timer)'
http-service\t'systemd: --serve, socket-activated (port_exporter-http.service)'
http-socket\t'systemd: its socket, 127.0.0.1:8000 (port_exporter-http.socket)'
sysusers\t'systemd-sysusers: the system user (sysusers.d/port_exporter.conf)'
tmpfiles\t'systemd-tmpfiles: its directories and link (tmpfiles.d/port_exporter.conf)'
options\t'The units\' options file (/etc/default/port_exporter)'"
complete -c port_exporter -l include-closed -d 'Also write 0 for each selected port that is closed (needs --ports)'
complete -c port_exporter -s v -l verbose -d 'Say on stderr which method ran, how long it took, what it found, and why a listener has no process'
complete -c port_exporter -s h -l help -d 'Print help (see more with \'--help\')'
complete -c port_exporter -s V -l version -d 'Print version'

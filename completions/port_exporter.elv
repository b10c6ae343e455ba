
use builtin;
use str;

set edit:completion:arg-completer[port_exporter] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'port_exporter'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'port_exporter'= {
            cand -o 'Write the metrics atomically to FILE instead of stdout'
            cand --output 'Write the metrics atomically to FILE instead of stdout'
            cand --serve 'Serve the metrics over HTTP at ADDR instead [default ADDR: :8000]'
            cand --web.config.file 'TLS, client certificates and basic auth for --serve, from FILE'
            cand --web-config-file 'TLS, client certificates and basic auth for --serve, from FILE'
            cand -p 'Report only these ports, such as 22,80,443,8000-9000 [default: all]'
            cand --ports 'Report only these ports, such as 22,80,443,8000-9000 [default: all]'
            cand -x 'Never report these ports, such as 32768-60999 (same form as --ports)'
            cand --exclude 'Never report these ports, such as 32768-60999 (same form as --ports)'
            cand --protocol 'Scan these protocols: tcp, udp or tcp,udp [default: tcp]'
            cand --labels 'Label each sample with these, such as scope,process [default: port only]'
            cand --netns 'Scan every network namespace of the host: all (needs root)'
            cand --format 'Print as prometheus, table or json [default: prometheus; table with --watch]'
            cand --watch 'List the listeners, then print each that opens or closes, scanning every INTERVAL [default INTERVAL: 1s]'
            cand -m 'How to find the open ports'
            cand --method 'How to find the open ports'
            cand -j 'Threads for --method bind [default: one per CPU]'
            cand --threads 'Threads for --method bind [default: one per CPU]'
            cand --generate 'Print the man page, a shell completion script, alerting rules or a systemd unit, then exit'
            cand --include-closed 'Also write 0 for each selected port that is closed (needs --ports)'
            cand -v 'Say on stderr which method ran, how long it took, what it found, and why a listener has no process'
            cand --verbose 'Say on stderr which method ran, how long it took, what it found, and why a listener has no process'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
    ]
    $completions[$command]
}


using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'port_exporter' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'port_exporter'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'port_exporter' {
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Write the metrics atomically to FILE instead of stdout')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Write the metrics atomically to FILE instead of stdout')
            [CompletionResult]::new('--serve', '--serve', [CompletionResultType]::ParameterName, 'Serve the metrics over HTTP at ADDR instead [default ADDR: :8000]')
            [CompletionResult]::new('--web.config.file', '--web.config.file', [CompletionResultType]::ParameterName, 'TLS, client certificates and basic auth for --serve, from FILE')
            [CompletionResult]::new('--web-config-file', '--web-config-file', [CompletionResultType]::ParameterName, 'TLS, client certificates and basic auth for --serve, from FILE')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'Report only these ports, such as 22,80,443,8000-9000 [default: all]')
            [CompletionResult]::new('--ports', '--ports', [CompletionResultType]::ParameterName, 'Report only these ports, such as 22,80,443,8000-9000 [default: all]')
            [CompletionResult]::new('-x', '-x', [CompletionResultType]::ParameterName, 'Never report these ports, such as 32768-60999 (same form as --ports)')
            [CompletionResult]::new('--exclude', '--exclude', [CompletionResultType]::ParameterName, 'Never report these ports, such as 32768-60999 (same form as --ports)')
            [CompletionResult]::new('--protocol', '--protocol', [CompletionResultType]::ParameterName, 'Scan these protocols: tcp, udp or tcp,udp [default: tcp]')
            [CompletionResult]::new('--labels', '--labels', [CompletionResultType]::ParameterName, 'Label each sample with these, such as scope,process [default: port only]')
            [CompletionResult]::new('--netns', '--netns', [CompletionResultType]::ParameterName, 'Scan every network namespace of the host: all (needs root)')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Print as prometheus, table or json [default: prometheus; table with --watch]')
            [CompletionResult]::new('--watch', '--watch', [CompletionResultType]::ParameterName, 'List the listeners, then print each that opens or closes, scanning every INTERVAL [default INTERVAL: 1s]')
            [CompletionResult]::new('-m', '-m', [CompletionResultType]::ParameterName, 'How to find the open ports')
            [CompletionResult]::new('--method', '--method', [CompletionResultType]::ParameterName, 'How to find the open ports')
            [CompletionResult]::new('-j', '-j', [CompletionResultType]::ParameterName, 'Threads for --method bind [default: one per CPU]')
            [CompletionResult]::new('--threads', '--threads', [CompletionResultType]::ParameterName, 'Threads for --method bind [default: one per CPU]')
            [CompletionResult]::new('--generate', '--generate', [CompletionResultType]::ParameterName, 'Print the man page, a shell completion script, alerting rules or a systemd unit, then exit')
            [CompletionResult]::new('--include-closed', '--include-closed', [CompletionResultType]::ParameterName, 'Also write 0 for each selected port that is closed (needs --ports)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Say on stderr which method ran, how long it took, what it found, and why a listener has no process')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Say on stderr which method ran, how long it took, what it found, and why a listener has no process')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}

//! The command line, declared once: `--help`, the man page and the shell
//! completions are all rendered from this definition.

use std::{
    ffi::{OsStr, OsString},
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{
    Arg, Command, CommandFactory, Parser, ValueEnum,
    builder::{ArgPredicate, TypedValueParser},
    error::{ContextKind, ContextValue, ErrorKind},
};

use crate::{
    job::{Format, Job},
    labels::{Label, Labels},
    ports::{self, PortSet},
    scan::{Detail, Method, Namespaces, Plan, Protocol, Protocols},
    serve::ListenAddr,
};

const LONG_ABOUT: &str = "\
Tell Prometheus which TCP ports of this machine are open.

A port is open when a TCP socket listens on it (LISTEN state) on any local \
address and either IP family, in the network namespace port_exporter runs in: \
exactly the ports `ss -Htln` lists. Ports that are only bound, such as the \
local ends of outgoing connections or sockets in TIME_WAIT, are not open.

Each open port becomes one sample, instance_open_ports{port=\"N\"} 1, in the \
Prometheus text exposition format, followed by a few port_exporter_* metrics \
about the scan itself. --protocol adds UDP ports; --labels adds the protocol, address, scope, user or \
process of each listener, one sample per distinct combination; --format table \
or json shows every listener with all of that, for people and scripts. --netns \
all does the same in every network namespace of the host (containers, ip netns), \
each sample labelled with its namespace.

port_exporter scans once and prints the metrics to stdout. With --output it \
replaces FILE atomically instead, for node_exporter's textfile collector: run \
it from cron or a systemd timer. With --serve it answers HTTP scrapes from \
Prometheus instead, scanning afresh for each.";

const AFTER_LONG_HELP: &str = "\
Examples:
  Look at what listens here, and who:
      port_exporter --format table --protocol tcp,udp

  Alert on services exposed on every address (see --generate rules):
      port_exporter --labels scope,process

  The listeners for a script:
      port_exporter --format json | jq -r '.[] | select(.scope == \"any\") | .port'

  What listens in every container and ip netns namespace (as root):
      port_exporter --netns all --format table

  See what opens and closes while a service starts (Ctrl-C stops):
      port_exporter --watch 100ms --protocol tcp,udp

  Ports that must stay open, with 0 when one is closed (one series each):
      port_exporter --ports 22,443 --include-closed

  Leave out the ephemeral range, where short-lived listeners such as dev
  servers come and go (see --exclude):
      port_exporter --exclude 32768-60999

  Every minute from cron (/etc/cron.d/port_exporter). cron's PATH is
  /usr/bin:/bin, so give the full path: /usr/bin/port_exporter from the
  Debian package, /usr/local/bin/port_exporter from the source install:
      * * * * * root /usr/bin/port_exporter -o /var/lib/prometheus/node-exporter/open_ports.prom

  node_exporter then exports the file with:
      node_exporter --collector.textfile.directory=/var/lib/prometheus/node-exporter

  Serve scrapes on port 8000, local clients only:
      port_exporter --serve 127.0.0.1:8000

  Serve over HTTPS with basic auth, as node_exporter does:
      port_exporter --serve --web.config.file /etc/port_exporter/web.yml

  Alerting rules for the Prometheus server (then list the file under
  rule_files: in prometheus.yml):
      port_exporter --generate rules > /etc/prometheus/port_exporter.rules.yml

Exit status:
  0  the metrics were printed or written; --watch or --serve stopped on
     SIGINT or SIGTERM
  1  the scan or the write failed; an existing FILE is left as it was
  2  usage error, such as a bad port list; nothing is scanned or written";

/// Tell Prometheus which TCP ports of this machine are open
#[derive(Debug, Parser)]
#[command(
    name = "port_exporter",
    version,
    long_about = LONG_ABOUT,
    after_long_help = AFTER_LONG_HELP,
    after_help = "Use --help for what 'open' means, the methods compared, and examples.",
    max_term_width = 100,
    help_expected = true
)]
// The field docs are --help text, where `[IPV6]:PORT` and `net:[INODE]` are
// literal, not links.
#[allow(rustdoc::broken_intra_doc_links)]
pub struct Args {
    /// Write the metrics atomically to FILE instead of stdout
    ///
    /// FILE is replaced by a rename from a temporary file in the same
    /// directory, mode 0644, so node_exporter never reads a partial file and
    /// can read it as another user. On any failure FILE is left as it was.
    /// node_exporter's textfile collector reads only names ending in .prom.
    /// `-` means stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Serve the metrics over HTTP at ADDR instead [default ADDR: :8000]
    ///
    /// GET / and GET /metrics answer from a scan that starts after the
    /// request arrived; scrapes that arrive together share one. ADDR is
    /// :PORT (every interface, IPv4 and IPv6), IPV4:PORT,
    /// [IPV6]:PORT or HOST:PORT; port 0 picks a free port. The bound
    /// address is printed on stderr. Runs until SIGTERM or SIGINT.
    ///
    /// Without ADDR, when systemd passes listening sockets (socket
    /// activation: LISTEN_PID is this process, LISTEN_FDS at least 1), it
    /// serves on those and binds nothing itself.
    #[arg(
        long,
        value_name = "ADDR",
        num_args = 0..=1,
        value_parser = ListenAddr::parse,
        conflicts_with = "output"
    )]
    pub serve: Option<Option<ListenAddr>>,

    /// TLS, client certificates and basic auth for --serve, from FILE
    ///
    /// FILE is a web configuration file in the format of the Prometheus
    /// exporter toolkit, as node_exporter's --web.config.file reads it:
    /// tls_server_config (cert_file, key_file, client_auth_type,
    /// client_ca_file, ...), http_server_config (headers),
    /// basic_auth_users (user: bcrypt hash) and rate_limit. Relative paths
    /// in it are relative to FILE's directory. FILE and the certificate
    /// files are re-read when they change, so certificates rotate without
    /// a restart. Any error in it stops the start, naming the key.
    #[arg(
        long = "web.config.file",
        visible_alias = "web-config-file",
        value_name = "FILE",
        requires = "serve"
    )]
    pub web_config_file: Option<PathBuf>,

    /// Report only these ports, such as 22,80,443,8000-9000 [default: all]
    ///
    /// A comma-separated list of ports (1-65535) and inclusive ranges, one
    /// argument; a stray comma (an empty item) is an error, as in every
    /// list option. Other ports are neither reported nor, with --method
    /// bind, probed.
    #[arg(short, long, value_name = "LIST", value_parser = PortList, allow_hyphen_values = true)]
    pub ports: Option<PortSet>,

    /// Never report these ports, such as 32768-60999 (same form as --ports)
    ///
    /// Applied after --ports. Excluding the ephemeral range (sysctl
    /// net.ipv4.ip_local_port_range) hides listeners that come and go,
    /// which keeps the number of series stable, and also any service that
    /// listens there for good: every port is reported by default.
    #[arg(short = 'x', long, value_name = "LIST", value_parser = PortList, allow_hyphen_values = true)]
    pub exclude: Option<PortSet>,

    /// Also write 0 for each selected port that is closed (needs --ports)
    ///
    /// Lets an alert fire on instance_open_ports == 0 instead of relying on
    /// absent(). Only with an explicit --ports list, so that closed ports
    /// never add up to 65,535 series.
    #[arg(long)]
    pub include_closed: bool,

    /// Scan these protocols: tcp, udp or tcp,udp [default: tcp]
    ///
    /// A connected UDP socket is a client, not an open port. Whenever UDP is
    /// scanned every sample carries protocol="tcp" or protocol="udp", so
    /// 53/tcp and 53/udp stay apart. --method bind knows TCP only.
    #[arg(
        long,
        value_enum,
        value_name = "LIST",
        value_delimiter = ',',
        hide_default_value = true,
        default_value = "tcp"
    )]
    pub protocol: Vec<Protocol>,

    /// Label each sample with these, such as scope,process [default: port only]
    ///
    /// A comma-separated list of protocol, address, scope, user and process.
    /// Each sample then stands for one distinct combination of the chosen
    /// labels on a port, so every label multiplies the series (see the
    /// README's table). Never a pid or inode: they change on every restart.
    /// process needs root (or CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH) for
    /// other users' processes; a listener it cannot attribute gets
    /// process="", is counted in port_exporter_unattributed_listeners, and
    /// --verbose says why (a scheduled run stays silent). Closed ports (--include-closed) carry
    /// port and protocol only (and netns). --method bind knows protocol
    /// only.
    #[arg(long, value_enum, value_name = "LIST", value_delimiter = ',')]
    pub labels: Vec<Label>,

    /// Scan every network namespace of the host: all (needs root)
    ///
    /// Every namespace that has a process (/proc/*/ns/net) or a name
    /// (/run/netns from ip netns add, /var/run/docker/netns) is entered and
    /// scanned as port_exporter's own is, and every sample gets a netns
    /// label: the ip netns name, host for the namespace of PID 1, a
    /// container's short id (Docker, containerd, CRI-O, Podman: from its
    /// cgroup), or else net:[INODE]; each stays the same for the
    /// namespace's life. Needs root (CAP_SYS_ADMIN and CAP_SYS_PTRACE),
    /// and the host's PID namespace to see every process. A namespace that
    /// exists but cannot be entered is counted in
    /// port_exporter_netns_unscanned and named once on stderr.
    #[arg(long, value_enum, value_name = "WHICH")]
    pub netns: Option<Namespaces>,

    /// Print as prometheus, table or json [default: prometheus; table with --watch]
    ///
    /// table and json list every listener with all it can find (protocol,
    /// port, address, scope, user, process, pid; netns with --netns all),
    /// whatever --labels says, on stdout only: --output is for
    /// node_exporter, and --serve answers Prometheus. --watch prints them as
    /// events (see there).
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        default_value_t = Format::Prometheus,
        default_value_if("watch", ArgPredicate::IsPresent, "table"),
        hide_default_value = true
    )]
    pub format: Format,

    /// List the listeners, then print each that opens or closes, scanning every INTERVAL [default INTERVAL: 1s]
    ///
    /// INTERVAL is a duration such as 100ms, 2s or 1m (from 1ms to a day).
    /// First every listener is listed (marked = in the table, "event":
    /// "listening" in JSON), then one line per listener that opened (+,
    /// "open") or closed (-, "close"), each with the time of the scan that
    /// saw it, in RFC 3339 UTC. A listener is its socket, with its address,
    /// user and process: one whose process or user changes closes and opens
    /// again. A listener that lives at least two intervals is always seen.
    /// --format table (the default, also when stdout is not a terminal)
    /// prints aligned lines, coloured on a terminal unless NO_COLOR is set;
    /// --format json prints JSON Lines: "event", "time", then the keys of
    /// a --format json row. --protocol, --ports, --exclude, --netns and
    /// --method netlink or procfs apply to every scan. A scan that fails is
    /// said once per cause on stderr, and the watch goes on. Runs until
    /// SIGINT or SIGTERM, or until the reader of stdout goes away.
    #[arg(
        long,
        value_name = "INTERVAL",
        num_args = 0..=1,
        default_missing_value = "1s",
        value_parser = parse_interval
    )]
    pub watch: Option<Duration>,

    /// How to find the open ports
    #[arg(short, long, value_enum, value_name = "METHOD", default_value_t = Method::Auto)]
    pub method: Method,

    /// Threads for --method bind [default: one per CPU]
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// Say on stderr which method ran, how long it took, what it found, and why a listener has no process
    #[arg(short, long)]
    pub verbose: bool,

    /// Print the man page, a shell completion script, alerting rules or a systemd unit, then exit
    ///
    /// man/port_exporter.1 and completions/ in the source tree are this
    /// option's output. `rules` prints Prometheus alerting rules for these
    /// metrics (new, exposed and vanished ports; stale or failing scans).
    /// The systemd units and files are those the Debian package installs,
    /// for installing a copied binary the same way.
    #[arg(long, value_enum, value_name = "KIND", exclusive = true)]
    pub generate: Option<GenerateKind>,
}

/// The value of `--watch`: a duration of at least a millisecond and at
/// most a day, such as `100ms`, `2s` or `1m`.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(text)
        .map_err(|why| format!("{why} (write it as 100ms, 2s or 1m)"))?;
    match interval {
        i if i < Duration::from_millis(1) => Err("the interval must be at least 1ms".into()),
        i if i > Duration::from_secs(86_400) => Err("the interval must be at most a day".into()),
        i => Ok(i),
    }
}

/// The values of `--ports` and `--exclude`: a port list
/// ([`ports::parse_list`]), with errors that name the option, also for a
/// value that is not UTF-8, and never echo more than a line of the value.
#[derive(Clone, Copy, Debug)]
struct PortList;

impl TypedValueParser for PortList {
    type Value = PortSet;

    fn parse_ref(
        &self,
        cmd: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<PortSet, clap::Error> {
        let option = arg.map_or_else(|| "a port list".to_string(), |arg| format!("'{arg}'"));
        let Some(text) = value.to_str() else {
            return Err(cmd.clone().error(
                ErrorKind::InvalidUtf8,
                format!("invalid value for {option}: it is not UTF-8"),
            ));
        };
        ports::parse_list(text).map_err(|why| {
            cmd.clone().error(
                ErrorKind::ValueValidation,
                format!("invalid value {} for {option}: {why}", ports::quoted(text)),
            )
        })
    }
}

/// What `--generate` can print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GenerateKind {
    /// The man page, in roff (man/port_exporter.1)
    Man,
    /// Bash completion (completions/port_exporter.bash)
    Bash,
    /// Zsh completion (completions/_port_exporter)
    Zsh,
    /// Fish completion (completions/port_exporter.fish)
    Fish,
    /// Elvish completion (completions/port_exporter.elv)
    Elvish,
    /// PowerShell completion (completions/_port_exporter.ps1)
    Powershell,
    /// Prometheus alerting rules (src/rules.yml)
    Rules,
    /// systemd: the textfile job, run by the timer (port_exporter.service)
    Service,
    /// systemd: its timer, every minute (port_exporter.timer)
    Timer,
    /// systemd: --serve, socket-activated (port_exporter-http.service)
    HttpService,
    /// systemd: its socket, 127.0.0.1:8000 (port_exporter-http.socket)
    HttpSocket,
    /// systemd-sysusers: the system user (sysusers.d/port_exporter.conf)
    Sysusers,
    /// systemd-tmpfiles: its directories and link (tmpfiles.d/port_exporter.conf)
    Tmpfiles,
    /// The units' options file (/etc/default/port_exporter)
    Options,
}

impl Args {
    /// The ports to report: --ports (or all) minus --exclude.
    fn selected_ports(&self) -> PortSet {
        let mut selected = self.ports.clone().unwrap_or_else(PortSet::all);
        if let Some(exclude) = &self.exclude {
            selected.subtract(exclude);
        }
        selected
    }

    /// The file of `--output`, unless it is `-` (stdout).
    pub fn output_file(&self) -> Option<&Path> {
        self.output
            .as_deref()
            .filter(|path| *path != Path::new("-"))
    }

    /// The protocols of `--protocol`.
    fn protocols(&self) -> Protocols {
        Protocols {
            tcp: self.protocol.contains(&Protocol::Tcp),
            udp: self.protocol.contains(&Protocol::Udp),
        }
    }

    /// What to scan and report, the same for one-shot runs and the server.
    pub fn job(&self) -> Job {
        let namespaces = self.netns.unwrap_or_default();
        // --labels, with protocol whenever UDP is scanned and netns with --netns all.
        let mut labels: Labels = self.labels.iter().copied().collect();
        if self.protocols().udp {
            labels = labels.with(Label::Protocol);
        }
        if namespaces == Namespaces::All {
            labels = labels.with(Label::Netns);
        }
        let every_detail = self.format != Format::Prometheus;
        Job {
            plan: Plan {
                method: self.method,
                selected: self.selected_ports(),
                threads: self.threads.map(usize::from),
                protocols: self.protocols(),
                detail: Detail {
                    sockets: every_detail || labels.need_sockets(),
                    users: every_detail || labels.has(Label::User),
                    processes: every_detail || labels.has(Label::Process),
                },
                namespaces,
            },
            include_closed: self.include_closed,
            verbose: self.verbose,
            labels,
            format: self.format,
        }
    }

    /// Why these options do not go together, if they do not: the first of
    /// these rules that applies.
    fn conflict(&self) -> Option<String> {
        let to_file = self.output_file().is_some();
        let format = self.format.to_possible_value().expect("a value");
        let format = format.get_name();
        let listing = self.format != Format::Prometheus;
        let (watch, serve) = (self.watch.is_some(), self.serve.is_some());
        let bind = self.method == Method::Bind;
        let protocols = self.protocols();
        let label = self.labels.iter().find(|l| **l != Label::Protocol);
        [
            (
                self.include_closed && self.ports.is_none(),
                "--include-closed needs an explicit --ports list",
            ),
            (
                watch && to_file,
                "--watch prints changes on stdout: --output writes one scan to FILE, for \
                 node_exporter",
            ),
            (
                watch && serve,
                "--watch and --serve do not go together: --watch prints changes on stdout, \
                 --serve answers scrapes",
            ),
            (
                watch && !listing,
                "--watch prints --format table or json: the Prometheus format has no events",
            ),
            (
                watch && self.include_closed,
                "--include-closed applies to the Prometheus format: --watch shows listeners, \
                 and a closed port has none",
            ),
            (
                watch && bind,
                "--watch shows listeners, which --method bind cannot see (it learns only which \
                 ports are in use); use --method netlink or procfs",
            ),
            (
                listing && to_file,
                &format!(
                    "--format {format} prints on stdout only: --output writes the Prometheus \
                     format, for node_exporter"
                ),
            ),
            (
                listing && serve,
                &format!(
                    "--format {format} is for one-shot runs: --serve answers in the Prometheus \
                     format"
                ),
            ),
            (
                listing && self.include_closed,
                &format!(
                    "--include-closed applies to the Prometheus format: --format {format} lists \
                     listeners, and a closed port has none"
                ),
            ),
            (
                bind && self.netns == Some(Namespaces::All),
                "--netns all scans each namespace from inside, which --method bind cannot do (it \
                 probes the ports of its own namespace); use --method netlink or procfs",
            ),
            (
                bind && protocols.udp,
                "--method bind finds TCP ports only (binding a UDP port cannot tell a service \
                 from a client); use --method netlink or procfs for --protocol udp",
            ),
            (
                bind && label.is_some(),
                &format!(
                    "--labels {} needs the kernel's socket table: --method bind learns only \
                     which ports are in use, not their address, owner or process; use --method \
                     netlink or procfs",
                    label.map_or("", |l| l.name())
                ),
            ),
            (
                bind && listing,
                &format!(
                    "--format {format} lists listeners, which --method bind cannot see (it \
                     learns only which ports are in use); use --method netlink or procfs"
                ),
            ),
            (
                !protocols.tcp && !protocols.udp,
                "--protocol names no protocol",
            ),
            (
                self.selected_ports().is_empty(),
                "--exclude removes every port that --ports selects",
            ),
        ]
        .into_iter()
        .find_map(|(conflicts, why)| conflicts.then(|| why.to_string()))
    }
}

/// Parses the command line, including the checks that clap cannot express.
pub fn parse() -> Result<Args, clap::Error> {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let args = Args::try_parse_from(&argv).map_err(|err| with_hint(err, &argv))?;
    // --generate is exclusive: then every other option has its default, and
    // nothing below applies.
    if let Some(why) = args.conflict() {
        return Err(Args::command().error(ErrorKind::ArgumentConflict, why));
    }
    Ok(args)
}

/// The options whose value is a comma-separated list: long name, short.
const LISTS: [(&str, Option<&str>); 4] = [
    ("--ports", Some("-p")),
    ("--exclude", Some("-x")),
    ("--labels", None),
    ("--protocol", None),
];

/// One list option on the command line: its long name, its value, and the
/// index of the word after the value.
struct ListUse<'a> {
    option: &'static str,
    value: &'a str,
    next: usize,
}

/// Every use of a list option in `words`, in the forms `--ports V`,
/// `--ports=V`, `-p V` and `-pV`.
fn list_uses(words: &[String]) -> Vec<ListUse<'_>> {
    let mut uses = Vec::new();
    let mut i = 1;
    while let Some(word) = words.get(i).map(String::as_str).filter(|w| *w != "--") {
        let found = LISTS.into_iter().find_map(|(option, short)| {
            let glued = word.strip_prefix(option).and_then(|r| r.strip_prefix('='));
            let glued = glued
                .or_else(|| (short.and_then(|s| word.strip_prefix(s))).filter(|v| !v.is_empty()));
            let (value, next) = match glued {
                Some(value) => (value, i + 1),
                None if word == option || short == Some(word) => {
                    (words.get(i + 1)?.as_str(), i + 2)
                }
                None => return None,
            };
            Some(ListUse {
                option,
                value,
                next,
            })
        });
        i = found.as_ref().map_or(i + 1, |list| list.next);
        uses.extend(found);
    }
    uses
}

/// The words from `from` on that look like more of a list (`--ports 22
/// 80`, `--ports 22, 80`): up to the next option.
fn strays(words: &[String], from: usize) -> &[String] {
    let rest = words.get(from..).unwrap_or_default();
    let n = rest.iter().take_while(|w| !w.starts_with('-')).count();
    &rest[..n]
}

/// A list and the stray words after it, written as the one argument they
/// were meant to be.
fn joined(list: &ListUse, strays: &[String]) -> String {
    let items: Vec<&str> = std::iter::once(list.value)
        .chain(strays.iter().map(String::as_str))
        .flat_map(|w| w.split(','))
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .collect();
    format!("{} {}", list.option, items.join(","))
}

/// `err`, with what to type instead where the mistake is a common one:
/// node_exporter's flags, a list split by spaces, a stray comma.
fn with_hint(err: clap::Error, argv: &[OsString]) -> clap::Error {
    let words: Vec<String> = argv
        .iter()
        .map(|w| w.to_string_lossy().into_owned())
        .collect();
    let Some(ContextValue::String(invalid)) = err.get(ContextKind::InvalidArg) else {
        return err;
    };
    let hint = match err.kind() {
        ErrorKind::UnknownArgument => {
            unknown_hint(invalid, &words).map(|hint| (ErrorKind::UnknownArgument, hint))
        }
        ErrorKind::InvalidValue | ErrorKind::ValueValidation => {
            list_uses(&words).into_iter().find_map(|list| {
                let named = invalid.split(' ').next() == Some(list.option);
                let why = ports::list_items(list.value).err().filter(|_| named)?;
                let instead = match strays(&words, list.next) {
                    [] => String::new(),
                    strays => format!(
                        "; a list is one argument, without spaces: {}",
                        joined(&list, strays)
                    ),
                };
                let value = ports::quoted(list.value);
                let message = format!("invalid value {value} for '{invalid}': {why}{instead}");
                Some((ErrorKind::ValueValidation, message))
            })
        }
        _ => None,
    };
    hint.map_or(err, |(kind, message)| Args::command().error(kind, message))
}

/// What to type instead of the unknown argument `arg`.
fn unknown_hint(arg: &str, words: &[String]) -> Option<String> {
    let flag = arg.split('=').next().unwrap_or(arg);
    // node_exporter's flags, as its users type them.
    let instead = match flag {
        "--web.listen-address" => {
            let mut rest = words.iter().skip_while(|w| !w.starts_with(flag));
            let given = rest.next().and_then(|word| match word.split_once('=') {
                Some((_, value)) => Some(value),
                None => rest
                    .next()
                    .map(String::as_str)
                    .filter(|w| !w.starts_with('-')),
            });
            match given {
                Some(addr) => format!(
                    "port_exporter takes the address to listen on as --serve ADDR: --serve {addr}"
                ),
                None => "port_exporter takes the address to listen on as --serve ADDR, such as \
                         --serve :8000"
                    .into(),
            }
        }
        "--web.telemetry-path" => {
            "port_exporter answers scrapes at both / and /metrics; drop the option".into()
        }
        "--collector.textfile.directory" => {
            "that is node_exporter's option; port_exporter writes the file in it: \
             --output DIR/open_ports.prom"
                .into()
        }
        // Words that continue a list after a space: `--ports 22 80`.
        _ => {
            return list_uses(words).into_iter().find_map(|list| {
                let strays = strays(words, list.next);
                strays.iter().any(|w| w == arg).then(|| {
                    format!(
                        "unexpected argument '{arg}': a list is one argument, comma-separated \
                         without spaces: {}",
                        joined(&list, strays)
                    )
                })
            });
        }
    };
    Some(format!("unexpected argument '{flag}': {instead}"))
}

/// A clap error as the one line this tool prints for usage errors, such as
/// `invalid value '0' for '--ports <LIST>': port 0 is out of range ...`.
pub fn one_line(err: &clap::Error) -> String {
    let mut joined = String::new();
    for line in err.render().to_string().lines().map(str::trim) {
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if line.is_empty() || (line.starts_with("tip:") && !line.contains("similar")) {
            continue;
        }
        if !joined.is_empty() {
            joined.push_str(if line.starts_with("tip:") { "; " } else { " " });
        }
        joined.push_str(line);
    }
    joined
        .strip_prefix("error: ")
        .unwrap_or(&joined)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_takes_an_optional_address() {
        let args = Args::try_parse_from(["port_exporter", "--serve"]).unwrap();
        assert_eq!(args.serve, Some(None));
        let args = Args::try_parse_from(["port_exporter", "--serve", "--ports", "22"]).unwrap();
        assert_eq!(args.serve, Some(None));
        let args = Args::try_parse_from(["port_exporter", "--serve", "[::1]:0"]).unwrap();
        assert_eq!(
            args.serve,
            Some(Some(ListenAddr::Socket("[::1]:0".parse().unwrap())))
        );
        assert!(Args::try_parse_from(["port_exporter", "--serve", "-o", "x.prom"]).is_err());
    }

    #[test]
    fn the_web_config_needs_serve() {
        for flag in ["--web.config.file", "--web-config-file"] {
            let args = Args::try_parse_from(["port_exporter", "--serve", flag, "w.yml"]).unwrap();
            assert_eq!(args.web_config_file, Some(PathBuf::from("w.yml")));
            let err = Args::try_parse_from(["port_exporter", flag, "w.yml"]).unwrap_err();
            assert!(one_line(&err).contains("--serve"), "{}", one_line(&err));
        }
    }

    #[test]
    fn list_uses_find_every_form_and_the_words_after() {
        let words: Vec<String> = [
            "port_exporter",
            "-p22",
            "80",
            "--exclude=1-5",
            "--labels",
            "scope",
            "process",
            "-v",
            "--protocol",
            "tcp",
            "--",
            "--ports",
            "9",
        ]
        .map(String::from)
        .to_vec();
        let uses = list_uses(&words);
        let found: Vec<(&str, &str, Vec<String>)> = uses
            .iter()
            .map(|u| (u.option, u.value, strays(&words, u.next).to_vec()))
            .collect();
        assert_eq!(
            found,
            [
                ("--ports", "22", vec!["80".to_string()]),
                ("--exclude", "1-5", vec![]),
                ("--labels", "scope", vec!["process".to_string()]),
                ("--protocol", "tcp", vec![]),
            ]
        );
        assert_eq!(
            joined(&uses[0], strays(&words, uses[0].next)),
            "--ports 22,80"
        );
        // A value that looks like an option is still the option's value.
        let words: Vec<String> = ["port_exporter", "--ports", "--labels", "x"]
            .map(String::from)
            .to_vec();
        let uses = list_uses(&words);
        assert_eq!(uses.len(), 1);
        assert_eq!((uses[0].option, uses[0].value), ("--ports", "--labels"));
    }

    #[test]
    fn verify_cli() {
        Args::command().debug_assert();
    }

    #[test]
    fn usage_errors_fit_on_one_line() {
        for argv in [
            &["port_exporter", "--ports", "0"][..],
            &["port_exporter", "--method", "foo"],
            &["port_exporter", "--port", "22"],
            &["port_exporter", "--threads", "0"],
            &["port_exporter", "--serve", "8000"],
        ] {
            let err = Args::try_parse_from(argv).unwrap_err();
            let line = one_line(&err);
            assert!(!line.contains('\n') && !line.starts_with("error"), "{line}");
            assert!(
                line.contains(argv[argv.len() - 1]) || line.contains("--port"),
                "{line}"
            );
        }
    }
}

use strict;
use warnings;

# bin/virt-events, run as a program: the demonstration prints the four
# lifecycle events of test:///default in order, as text and as JSON, with
# each event loop; --count, --timeout, SIGINT and SIGTERM end it with the
# documented exit status; bad usage and a bad URI fail with a message on
# standard error; killing its supervising process stops the watch too;
# and, when libvirtd is installed, events and the close of the connection
# arrive from a real daemon, a domain name that holds a newline, quotes and
# other characters stays within one line of its event (text and JSON), and
# a daemon that stops answering (SIGSTOP) before or during the watch does
# not keep --timeout or SIGTERM from ending the program within about a
# second, with the documented status.

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Temp ();
use JSON::PP ();
use POSIX ();
use Test::More;
use Time::HiRes ();
use TestUtil qw(have_sys_virt);

BEGIN {
    plan skip_all => 'Sys::Virt is not installed' unless have_sys_virt();
}

use Sys::Virt;

my $SCRIPT = "$FindBin::Bin/../bin/virt-events";
my $TMP = File::Temp::tempdir(CLEANUP => 1);
my $LIMIT = 30;    # seconds any one run may take before it is killed
my @PERL = ($^X, map { "-I$_" } grep { !ref } @INC);

$SIG{PIPE} = 'IGNORE';

# ---- running the script --------------------------------------------------

my $runs = 0;

# Start the script with @args, its output going to files; with a first
# argument { reader_gone => 1 }, its stdout is a pipe nobody reads.
sub start_script {
    my $how = ref $_[0] ? shift : {};
    my (@args) = @_;
    $runs++;
    my %run = (args => "@args", out => "$TMP/out$runs", err => "$TMP/err$runs",
               started => Time::HiRes::time());
    pipe(my $r, my $w) or die "pipe: $!";
    $run{pid} = fork // die "fork: $!";
    if ($run{pid} == 0) {
        close $r;
        open STDIN, '<', '/dev/null' or POSIX::_exit(98);
        if ($how->{reader_gone}) {
            open STDOUT, '>&', $w or POSIX::_exit(98);
        } else {
            open STDOUT, '>', $run{out} or POSIX::_exit(98);
        }
        open STDERR, '>', $run{err} or POSIX::_exit(98);
        exec(@PERL, $SCRIPT, @args) or POSIX::_exit(99);
    }
    close $r;
    close $w;
    return \%run;
}

sub slurp {
    my ($file) = @_;
    open my $fh, '<', $file or return '';
    local $/;
    return scalar <$fh>;
}

# Wait (at most $seconds, by default $LIMIT, then kill it) for the script
# to exit, and add its exit status, signal, stdout lines, stderr and how
# long it ran to the run.
sub finish_script {
    my ($run, $seconds) = @_;
    my $deadline = Time::HiRes::time() + ($seconds // $LIMIT);
    while (waitpid($run->{pid}, POSIX::WNOHANG()) == 0) {
        if (Time::HiRes::time() > $deadline) {
            kill 'KILL', $run->{pid};
            waitpid($run->{pid}, 0);
            $run->{timed_out} = 1;
            last;
        }
        Time::HiRes::sleep(0.02);
    }
    my $status = $?;
    $run->{seconds} = Time::HiRes::time() - $run->{started};
    $run->{exit} = ($status & 127) ? undef : $status >> 8;
    $run->{signal} = $status & 127;
    $run->{lines} = [split /\n/, slurp($run->{out})];
    $run->{stderr} = slurp($run->{err});
    return $run;
}

sub run_script { return finish_script(start_script(@_)) }

# Wait (bounded) until the file's text matches $re.
sub wait_for {
    my ($file, $re, $seconds) = @_;
    my $deadline = Time::HiRes::time() + $seconds;
    until (slurp($file) =~ $re) {
        return 0 if Time::HiRes::time() > $deadline;
        Time::HiRes::sleep(0.02);
    }
    return 1;
}

# The exit status is as expected; if not, show what the script said.
sub exits_with {
    my ($run, $want, $name) = @_;
    is($run->{exit}, $want, $name)
        or diag("virt-events $run->{args}: ",
                $run->{timed_out} ? "killed after $run->{seconds} seconds, " : '',
                "signal $run->{signal}\nstderr: $run->{stderr}",
                "stdout:\n", map { "  $_\n" } @{$run->{lines}});
    return;
}

# The state and parent of a process, from /proc/PID/stat ("pid (command)
# state ppid ...", where the command may hold spaces and parentheses).
sub proc_stat {
    my ($pid) = @_;
    my ($state, $ppid) = slurp("/proc/$pid/stat") =~ /\)\s+(\S+)\s+([0-9]+)[^)]*\z/;
    return ($state // '', $ppid // 0);
}

# The processes whose parent is $pid.
sub children_of {
    my ($pid) = @_;
    opendir my $dh, '/proc' or return;
    return grep { /\A[0-9]+\z/ && (proc_stat($_))[1] == $pid } readdir $dh;
}

# The watching process of the run: the supervisor's child (it forks once
# its signal handlers are in place).  Waits for it, bounded; undef when
# there is none (or no /proc to find it in).
sub watcher_of {
    my ($run, $seconds) = @_;
    my $deadline = Time::HiRes::time() + $seconds;
    while (Time::HiRes::time() < $deadline) {
        my ($child) = children_of($run->{pid});
        return $child if $child;
        Time::HiRes::sleep(0.01);
    }
    return;
}

# The process exists and is not a zombie.
sub running {
    my ($pid) = @_;
    my ($state) = proc_stat($pid);
    return $state ne '' && $state ne 'Z' && $state ne 'X';
}

# ---- what the demonstration prints --------------------------------------

my @DEMO = (
    [stopped => 'destroyed', Sys::Virt::Domain::EVENT_STOPPED(),
     Sys::Virt::Domain::EVENT_STOPPED_DESTROYED()],
    [started => 'booted', Sys::Virt::Domain::EVENT_STARTED(),
     Sys::Virt::Domain::EVENT_STARTED_BOOTED()],
    [suspended => 'paused', Sys::Virt::Domain::EVENT_SUSPENDED(),
     Sys::Virt::Domain::EVENT_SUSPENDED_PAUSED()],
    [resumed => 'unpaused', Sys::Virt::Domain::EVENT_RESUMED(),
     Sys::Virt::Domain::EVENT_RESUMED_UNPAUSED()],
);
my $TIME = qr/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z/;
my @JSON_KEYS = sort qw(time uri type domain event event_code detail detail_code);

# A name libvirt accepts (a newline only by renaming): a tab, spaces,
# quotes, a backslash, a carriage return, DEL, a letter outside ASCII, the
# line separator U+2028, and a newline followed by what looks like a
# second event.
my $FORGED = '2026-01-01T00:00:00.000Z forged lifecycle stopped destroyed';
my $ODD_NAME = "tab\there \"quoted\" back\\slash\r\x7f caf\x{e9} \x{2028}"
    . "evil\n$FORGED";
# ... as a word of a text line (see OUTPUT in the script's POD), in bytes
my $ODD_WORD = '"tab\there \"quoted\" back\\\\slash\r\x7f caf' . "\xc3\xa9"
    . ' \xe2\x80\xa8evil\n' . $FORGED . '"';
my $WORD = qr/"(?:[^"\\]|\\.)*"|[^\s"\\]+/;

# The lines are the first @DEMO events, in text form, in order.
sub text_demo_ok {
    my ($lines, $n, $name) = @_;
    my @want = map { "$_->[0] $_->[1]" } @DEMO[0 .. $n - 1];
    my @bad = grep { $lines->[$_] !~ /\A$TIME test lifecycle \S+ \S+\z/ }
        0 .. $#$lines;
    is_deeply(\@bad, [], "$name: each line is 'time domain lifecycle event detail'");
    my @got = map { /\A\S+ test lifecycle (\S+ \S+)\z/ ? $1 : $_ } @$lines;
    is_deeply(\@got, \@want, "$name: the events and details, in order");
    return;
}

# The lines are the first @DEMO events, as JSON objects, in order.
sub json_demo_ok {
    my ($lines, $n, $name) = @_;
    my @records = map { eval { JSON::PP->new->decode($_) } } @$lines;
    is(scalar @records, scalar @$lines, "$name: every line is a JSON object")
        or return;
    is_deeply([map { [sort keys %$_] } @records], [map { \@JSON_KEYS } 1 .. $n],
              "$name: each has exactly the stable keys");
    is_deeply([map { [@$_{qw(event detail event_code detail_code)}] } @records],
              [map { [@$_] } @DEMO[0 .. $n - 1]],
              "$name: event and detail names and codes, in order");
    my @other = grep {
        $_->{type} ne 'lifecycle' || $_->{uri} ne 'test:///default'
            || $_->{domain} ne 'test' || $_->{time} !~ /\A$TIME\z/
    } @records;
    is_deeply(\@other, [], "$name: type, uri, domain and time");
    return;
}

# ---- each event loop -----------------------------------------------------

my $have_anyevent = eval {
    require AnyEvent;
    require Sys::Virt::Event::AnyEvent;
    1;
};
my $no_anyevent = $@ =~ /\ACan't locate (\S+)/ ? "$1 is not installed"
                : "AnyEvent or Sys::Virt::Event::AnyEvent does not load";

for my $loop (qw(default anyevent)) {
    SKIP: {
        skip("--loop anyevent: $no_anyevent", 1)
            if $loop eq 'anyevent' && !$have_anyevent;
        subtest("--loop $loop" => sub { loop_tests($loop) });
    }
}

sub loop_tests {
    my ($loop) = @_;
    my @loop = ('--loop', $loop);

    my $run = run_script(@loop, '--demo');
    exits_with($run, 0, '--demo exits 0');
    is(scalar @{$run->{lines}}, 4, '--demo prints 4 lines');
    text_demo_ok($run->{lines}, 4, '--demo');
    like($run->{stderr}, qr/watching test:\/\/\/default with the $loop/,
         'progress goes to stderr, naming the loop');

    $run = run_script(@loop, '--demo', '--json');
    exits_with($run, 0, '--demo --json exits 0');
    is(scalar @{$run->{lines}}, 4, '--demo --json prints 4 lines');
    json_demo_ok($run->{lines}, 4, '--demo --json');

    $run = run_script(@loop, '--demo', '--count', 2);
    exits_with($run, 0, '--demo --count 2 exits 0');
    is(scalar @{$run->{lines}}, 2, 'after 2 lines');
    text_demo_ok($run->{lines}, 2, '--demo --count 2');

    $run = run_script({ reader_gone => 1 }, @loop, '--demo');
    exits_with($run, 0, 'a reader that closed the output: exits 0');
    unlike($run->{stderr}, qr/cannot write|demo: resume/,
           'quietly, without going on with the demo');

    subtest('--timeout and signals' => sub { timing_tests(@loop) });

    SKIP: {
        skip('no /proc to find the watching process in', 3) unless -d '/proc/self';
        $run = start_script(@loop, qw(--uri test:///default --timeout), $LIMIT);
        ok(wait_for($run->{err}, qr/watching/, $LIMIT),
           'supervisor killed: the watch is set up');
        my $watcher = watcher_of($run, 5);
        kill 'KILL', $run->{pid};
        finish_script($run);
        my $deadline = Time::HiRes::time() + 5;
        Time::HiRes::sleep(0.01)
            while $watcher && running($watcher) && Time::HiRes::time() < $deadline;
        ok($watcher && !running($watcher),
           'supervisor killed: the watching process ends by itself');
        like(slurp($run->{err}), qr/the supervising process is gone: stopping\n\z/,
             'supervisor killed: the watch says why it stops');
    }

    daemon_tests($loop);
    return;
}

# How --timeout, SIGINT and SIGTERM end a watch.  They give the watch a
# second to clean up: under valgrind nothing is that fast.
sub timing_tests {
    my (@loop) = @_;
    plan(skip_all => 'timing: too slow under valgrind') if $ENV{SVE_UNDER_MEMCHECK};
    my $run;

    $run = run_script(@loop, qw(--uri test:///default --timeout 0.5));
    exits_with($run, 0, '--timeout without --count: exits 0 when the time is up');
    is_deeply($run->{lines}, [], 'having printed nothing (nothing happened)');

    $run = run_script(@loop, qw(--uri test:///default --timeout 0.5 --count 1));
    exits_with($run, 3, '--timeout before --count events: exits 3');
    like($run->{stderr}, qr/timed out.*0 of 1 event/, 'saying so on stderr');

    for my $sig (qw(INT TERM)) {
        $run = start_script(@loop, qw(--uri test:///default --timeout), $LIMIT);
        ok(wait_for($run->{err}, qr/watching/, $LIMIT), "SIG$sig: the watch is set up");
        kill $sig, $run->{pid};
        finish_script($run);
        exits_with($run, 128 + POSIX->can("SIG$sig")->(),
                   "SIG$sig: exits with 128 + the signal number");
        like($run->{stderr}, qr/SIG$sig: stopping\n\z/,
             "SIG$sig: says so on stderr, and nothing after");
    }

    return;
}

# ---- usage and errors ------------------------------------------------------

my $run = run_script('--help');
exits_with($run, 0, '--help exits 0');
my $usage = join "\n", @{$run->{lines}};
like($usage, qr/Usage:.*virt-events/s, '--help prints the usage on stdout');
like($usage, qr/--timeout.*--demo/s, 'and the options');
is($run->{stderr}, '', 'and nothing on stderr');

for my $bad (['--no-such-option'], [qw(--count 0)], [qw(--count x)],
             [qw(--timeout -1)], [qw(--loop select)], [qw(--demo --uri test:///default)],
             ['stray']) {
    $run = run_script(@$bad);
    exits_with($run, 2, "bad usage '@$bad' exits 2");
    like($run->{stderr}, qr/\Avirt-events: .+\n.*Usage:/s,
         'with a message and the synopsis on stderr');
    is_deeply($run->{lines}, [], 'and nothing on stdout');
}

for my $loop (qw(default anyevent)) {
    next if $loop eq 'anyevent' && !$have_anyevent;
    $run = run_script('--loop', $loop, '--uri', 'no-such-driver:///nowhere',
                      '--timeout', 5);
    exits_with($run, 1, "--loop $loop: a URI libvirt cannot open exits 1");
    like($run->{stderr}, qr/cannot connect to no-such-driver:\/\/\/nowhere: \S/,
         'with libvirt\'s reason on stderr');
    is_deeply($run->{lines}, [], 'and nothing on stdout');
}

# ---- a real daemon ---------------------------------------------------------

# With a private libvirtd, under one event loop: odd domain names, a
# daemon that stops answering, then events from its test driver and the
# close of the connection when it is stopped.
sub daemon_tests {
    my ($loop) = @_;
    my $why = eval { require PrivateLibvirtd; PrivateLibvirtd::unavailable() }
        // ($@ ? "PrivateLibvirtd does not load: $@" : undef);
    SKIP: {
        skip("no private libvirtd: $why", 1) if $why;
        my $daemon = eval { PrivateLibvirtd->start }
            or skip("libvirtd does not start: $@", 1);
        subtest('odd domain names' => sub { odd_name_tests($loop, $daemon) });
        subtest('a daemon that does not answer'
                => sub { stopped_daemon_tests($loop, $daemon) });
        subtest('events and the close'
                => sub { daemon_events_tests($loop, $daemon) });
    }
    return;
}

# A word of a text line back to the characters of the name, as the POD
# says: undef when it is not a well-formed word.
sub unquote_word {
    my ($word) = @_;
    if ($word =~ /\A"(.*)"\z/s) {
        my %escape = (n => "\n", t => "\t", r => "\r", '"' => '"', '\\' => '\\');
        my $bad = 0;
        ($word = $1) =~ s{\\(?:x([0-9a-f]{2})|(.))}{
            defined $1 ? chr hex $1 : $escape{$2} // do { $bad++; '' }
        }gse;
        return if $bad;
    }
    return utf8::decode($word) ? $word : undef;
}

# Defines a domain, renames it to $ODD_NAME and starts it, while the script
# watches (its stdout to the run's file); 4 events.  Then removes it.
sub odd_name_run {
    my ($daemon, @args) = @_;
    my $run = start_script(@args, '--uri', $daemon->uri, '--count', 4,
                           '--timeout', $LIMIT);
    ok(wait_for($run->{err}, qr/watching/, $LIMIT), "@args: the watch is set up");
    my $conn = Sys::Virt->new(uri => $daemon->uri);
    my $dom = $conn->define_domain("<domain type='test'><name>odd</name><memory>8192"
                                   . '</memory><os><type>hvm</type></os></domain>');
    my $bytes = $ODD_NAME;
    utf8::encode($bytes);
    $dom->rename($bytes);
    $dom->create;
    finish_script($run);
    $dom->destroy;
    $dom->undefine;
    exits_with($run, 0, "@args: exits 0 after the 4 events");
    return $run;
}

sub odd_name_tests {
    my ($loop, $daemon) = @_;
    my @want = ([odd => qw(defined added)], [odd => qw(undefined renamed)],
                [$ODD_NAME => qw(defined renamed)],
                [$ODD_NAME => qw(started booted)]);

    my $run = odd_name_run($daemon, '--loop', $loop);
    my @lines = @{$run->{lines}};
    is(scalar @lines, 4, 'text: 4 events, 4 lines');
    my @bad = grep { !/\A$TIME $WORD lifecycle \S+ \S+\z/ } @lines;
    is_deeply(\@bad, [], "text: each line is 'time name lifecycle event detail'");
    my @got = map {
        /\A\S+ ($WORD) lifecycle (\S+) (\S+)\z/ ? [unquote_word($1), $2, $3] : [$_]
    } @lines;
    is_deeply(\@got, \@want, 'text: the names, decoded, and the events, in order');
    is(join("\n", map { (split / /, $_, 2)[1] } @lines[2, 3]),
       "$ODD_WORD lifecycle defined renamed\n$ODD_WORD lifecycle started booted",
       'text: the odd name quoted and escaped as documented');
    like($lines[0], qr/\A$TIME odd lifecycle/, 'text: a plain name is not quoted');

    $run = odd_name_run($daemon, '--loop', $loop, '--json');
    @lines = @{$run->{lines}};
    is(scalar @lines, 4, 'JSON: 4 events, 4 lines');
    is_deeply([grep { !/\A[\x20-\x7e]+\z/ } @lines], [],
              'JSON: each line is printable ASCII');
    my @records = map { eval { JSON::PP->new->decode($_) } } @lines;
    is_deeply([map { [@$_{qw(domain event detail)}] } @records], \@want,
              'JSON: the exact names, and the events, in order');
    return;
}

# The daemon is stopped (SIGSTOP) before the script starts, or while it
# watches.  Each run is killed if it takes more than $bound seconds.
sub stopped_daemon_tests {
    my ($loop, $daemon) = @_;
    plan(skip_all => 'timing: too slow under valgrind') if $ENV{SVE_UNDER_MEMCHECK};
    my @args = ('--loop', $loop, '--uri', $daemon->uri);
    my $bound = 8;
    my $killed
        = qr/: no answer from libvirt within 1 second: ending without cleanup\n\z/;

    # the open never returns
    ok($daemon->signal('STOP'), 'stopped before the start');
    my $run = finish_script(start_script(@args, '--timeout', 1), $bound);
    exits_with($run, 3, 'stopped before the start, --timeout 1: exits 3');
    ok($run->{seconds} >= 1 && $run->{seconds} < 3.5,
       'within about a second of the timeout')
        or diag("it took $run->{seconds} seconds");
    like($run->{stderr}, qr/timed out after 1 second: no answer from libvirt\n\z/,
         'saying so on stderr');

    $run = start_script(@args);
    ok(watcher_of($run, 5),
       'stopped before the start, SIGTERM: the supervisor has started the watch');
    my $sent = Time::HiRes::time();
    kill 'TERM', $run->{pid};
    finish_script($run, $bound);
    exits_with($run, 143, 'stopped before the start, SIGTERM: exits 143');
    ok(Time::HiRes::time() - $sent < 2, 'within a second');
    like($run->{stderr}, qr/SIGTERM: stopping\n\z/, 'saying so on stderr');
    $daemon->signal('CONT');

    # deregistering and closing never return
    $run = start_script(@args, '--timeout', $LIMIT);
    ok(wait_for($run->{err}, qr/watching/, $LIMIT), 'stopped while watching');
    ok($daemon->signal('STOP'), 'stopped while watching, SIGTERM');
    $sent = Time::HiRes::time();
    kill 'TERM', $run->{pid};
    finish_script($run, $bound);
    my $took = Time::HiRes::time() - $sent;
    exits_with($run, 143, 'stopped while watching, SIGTERM: exits 143');
    ok($took < 2.5, 'within about a second') or diag("it took $took seconds");
    like($run->{stderr}, qr/SIGTERM: stopping\n.*$killed/, 'saying so on stderr');
    $daemon->signal('CONT');

    $run = start_script(@args, '--timeout', 1.5, '--count', 1);
    ok(wait_for($run->{err}, qr/watching/, $LIMIT), 'stopped while watching');
    ok($daemon->signal('STOP'), 'stopped while watching, --timeout 1.5 --count 1');
    finish_script($run, $bound);
    exits_with($run, 3, 'stopped while watching, --timeout passes: exits 3');
    ok($run->{seconds} >= 1.5 && $run->{seconds} < 4,
       'within about a second of the timeout')
        or diag("it took $run->{seconds} seconds");
    like($run->{stderr},
         qr/timed out after 1.5 seconds: 0 of 1 event seen\n.*$killed/,
         'saying so on stderr');
    $daemon->signal('CONT');
    return;
}

# Events from libvirtd's test driver over its socket, then the daemon is
# stopped: a close line, and exit status 1.
sub daemon_events_tests {
    my ($loop, $daemon) = @_;
    my $run = start_script('--loop', $loop, '--json', '--uri', $daemon->uri,
                           '--timeout', $LIMIT);
    ok(wait_for($run->{err}, qr/watching/, $LIMIT), 'daemon: the watch is set up');
    # a second client: the daemon's test driver is shared
    my $conn = Sys::Virt->new(uri => $daemon->uri);
    $conn->get_domain_by_name('test')->destroy;
    $conn->define_domain("<domain type='test'><name>caf\xc3\xa9</name>"
                         . '<memory>8192</memory><os><type>hvm</type></os></domain>');
    undef $conn;
    ok(wait_for($run->{out}, qr/\n.*\n/, $LIMIT), 'daemon: two event lines arrive');
    ok($daemon->stop, 'daemon: the daemon is stopped');
    finish_script($run);
    exits_with($run, 1, 'daemon: once the daemon is gone, exit 1');
    my @records = map { eval { JSON::PP->new->decode($_) } } @{$run->{lines}};
    is(scalar @records, 3, 'daemon: three JSON lines') or return;
    is_deeply([map { [@$_{qw(type domain event detail)}] } @records[0, 1]],
              [[qw(lifecycle test stopped destroyed)],
               [lifecycle => "caf\x{e9}", qw(defined added)]],
              'daemon: the destroy and define events, a UTF-8 name as characters');
    is($records[2]{type}, 'close', 'daemon: then the close of the connection');
    is($records[2]{reason}, 'eof',
       'with the reason: end of file (both loops report the hangup)');
    is_deeply([sort keys %{$records[2]}],
              [sort qw(time uri type reason reason_code)], 'and the stable keys');
    like($run->{stderr}, qr/connection .* was closed/, 'saying so on stderr');
    return;
}

done_testing;

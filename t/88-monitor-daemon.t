use strict;
use warnings;

# Sys::Virt::Event::Monitor against a real daemon (a private, unprivileged
# libvirtd, t/lib/PrivateLibvirtd.pm, reached through the remote driver):
#   A  every event the test driver emits (t/lib/DriverEvents.pm), made
#      through a second connection, reaches a monitor subscribed to 'all'
#      once, in order, with the right fields and the daemon's URI;
#   B  the daemon SIGKILLed and restarted, cycle after cycle: each time
#      the monitor delivers close (eof or error) then reconnect, has the
#      same event types registered as before, and an action on a fresh
#      connection reaches each of two lifecycle subscriptions exactly
#      once; open descriptors and the loop's watches and timers stay
#      exactly as after the first cycle, RSS grows by less than
#      $RSS_LIMIT_KB from the second cycle to the last;
#   C  the daemon stopped (SIGSTOP) under keepalive [1, 2]: close with
#      reason keepalive within 5 s; while it stays stopped, the attempts
#      to connect again fail after connect_timeout and the loop runs on
#      (a timer keeps firing); continued (SIGCONT), the monitor
#      reconnects to the same daemon, and events flow again;
#   D  stopped while it waits to try again (the daemon dead), by stop()
#      from the top level, by stop() from its on_error callback, or by
#      dropping the last reference to it: no attempt after it, nothing of
#      the monitor's left in the loop (at once and later) or among the
#      open descriptors;
#   E  stopped, or its last reference dropped, by a subscriber of close
#      as the daemon dies: no hang, no attempt after it, nothing left in
#      the loop or among the open descriptors.
# libvirt takes one event loop per process: each case runs in a child of
# its own (TestUtil::in_child) with a time limit, registers its loop kind
# (t/lib/Loops.pm), and prints its checks on lines that this process
# turns into test results (t/lib/ChildChecks.pm).  The daemon is started
# here and restarted from the child; it is stopped and its directory
# removed here.
#
# SVE_RESTARTS (default 20, 5 under maint/memcheck): cycles of B on the
# main loop kind (the native EV loop when it is built, else libvirt's
# default loop); each other kind runs $SHORT_CYCLES.

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use TestUtil qw(have_sys_virt error_of);
use ChildChecks qw(check check_is remark figure show checks_in_child);
use PrivateLibvirtd;

BEGIN {
    plan skip_all => 'Sys::Virt is not installed' unless have_sys_virt();
    my $why = PrivateLibvirtd::unavailable();
    plan skip_all => "no private libvirtd: $why" if $why;
}

use POSIX ();
use Scalar::Util ();
use Time::HiRes ();
use Sys::Virt;
use Sys::Virt::Event::Monitor;
use DriverEvents;
use Loops;

my $P = Loops::patience();
# under valgrind (maint/memcheck), whose point is memory errors, fewer
my $RESTARTS = $ENV{SVE_RESTARTS} // ($ENV{SVE_UNDER_MEMCHECK} ? 5 : 20);
die "SVE_RESTARTS must be a whole number above 1, not '$RESTARTS'\n"
    unless $RESTARTS =~ /\A[0-9]+\z/ && $RESTARTS >= 2;
my $SHORT_CYCLES = 3;
my $RSS_LIMIT_KB = 2048;    # B: growth from the second cycle to the last
my $DOM = 'test';

my %missing = map { $_ => scalar Loops::missing($_) } Loops::kinds();
my @KINDS = grep { !defined $missing{$_} } Loops::kinds();
note("$_: not run, $missing{$_}") for grep { defined $missing{$_} } Loops::kinds();
plan skip_all => 'no loop kind can run here' unless @KINDS;
my %AVAILABLE = map { $_ => 1 } @KINDS;
my $MAIN = $AVAILABLE{'ev-native'} ? 'ev-native' : 'default';

# ==========================================================================
# The parent: a daemon per case, the case in a child, its lines as tests
# ==========================================================================

# run_case(TITLE, KIND, CODE, timeout => SECONDS): returns the figures
# the child reported ([name, values...] each).
sub run_case {
    my ($t, $kind, $code, %opt) = @_;
    my $d = eval { PrivateLibvirtd->start };
    if (!$d) {
        fail("$t: a private libvirtd starts");
        diag($@);
        return [];
    }
    my $timeout = ($opt{timeout} || 30) * $P;
    my $started = Time::HiRes::time();
    my $read = checks_in_child($t, sub { child($kind, $code, $d) }, $timeout);
    my $seconds = Time::HiRes::time() - $started;
    note(sprintf '%s: %.1f s', $t, $seconds);
    $d->cleanup;
    return $read->{figures};
}

# ==========================================================================
# The child
# ==========================================================================

my @WARNINGS;

sub child {
    my ($kind, $code, $d) = @_;
    $SIG{PIPE} = 'IGNORE';      # a daemon that goes away
    $SIG{__WARN__} = sub { push @WARNINGS, $_[0] };
    my $loop = Loops->start($kind);
    $code->($loop, $d);
    check_is(join('', @WARNINGS), '', 'nothing warned');
    return;
}

# -- what the cases share ---------------------------------------------------

# Open descriptors of this process (the directory handle that reads
# them not counted).
sub fd_count { return scalar(my @fds = fds()) }

# "N=target" of each open descriptor.
sub fds {
    opendir my $dh, '/proc/self/fd' or return;
    my $self = fileno $dh;
    return map { "$_=" . (readlink("/proc/self/fd/$_") // '?') }
           sort { $a <=> $b } grep { /\A[0-9]+\z/ && $_ != $self } readdir $dh;
}

sub rss_kb {
    open my $fh, '<', '/proc/self/status' or return -1;
    while (my $line = <$fh>) {
        return $1 if $line =~ /^VmRSS:\s*([0-9]+)\s*kB/;
    }
    return -1;
}

# A monitor on the daemon whose errors are collected, not warned.
sub monitor {
    my ($d, %opt) = @_;
    my @errors;
    my $m = Sys::Virt::Event::Monitor->new(uri => $d->uri,
                                           on_error => sub { push @errors, $_[0] }, %opt);
    return ($m, \@errors);
}

# The test driver has no secret driver: the daemon refuses secret
# events, and the monitor says so once per type (on_error) and watches
# the others.  (refused types, other errors)
sub sort_errors {
    my ($errors) = @_;
    my (@refused, @other);
    for my $error (@$errors) {
        if ($error =~ /\Acannot watch '(secret-[a-z-]+)' events on /) {
            push @refused, $1;
        } else {
            push @other, $error;
        }
    }
    return (\@refused, \@other);
}

# Every libvirt event type but those the daemon refused, as
# registered_events gives them.
sub expected_registrations {
    my ($refused) = @_;
    my %refused = map { $_ => 1 } @$refused;
    return join ' ', sort grep { !$refused{$_} && $_ ne 'close' && $_ ne 'reconnect' }
        Sys::Virt::Event::Monitor->event_names;
}

# The failed attempts to connect again, of the messages on_error got.
sub reconnect_errors { return grep { /\Areconnecting, attempt / } @{$_[0]} }

# "event kind name type detail" of records, for comparisons.
sub records_text {
    return join ', ', map {
        join ' ', map { $_ // '-' } @$_{qw(event name type detail)}
    } @_;
}

sub connection_events { return grep { $_->{kind} eq 'connection' } @_ }

# Destroys and starts the test domain through a connection of its own,
# closed afterwards; '' or the error.
sub destroy_and_create {
    my ($d) = @_;
    return error_of {
        my $conn = Sys::Virt->new(uri => $d->uri);
        my $dom = $conn->get_domain_by_name($DOM);
        $dom->destroy;
        $dom->create;
    };
}

my $CYCLE_EVENTS = "lifecycle $DOM Stopped Destroyed, lifecycle $DOM Started Booted";

# The action of B and C, and its two events arriving exactly once on
# each of the two lifecycle subscriptions.
sub check_events_flow {
    my ($loop, $d, $all, $lifecycle, $what) = @_;
    @$all = ();
    @$lifecycle = ();
    check_is(destroy_and_create($d), '', "$what: destroy and create domain $DOM");
    $loop->run_until(sub { @$all >= 2 && @$lifecycle >= 2 }, 5 * $P);
    $loop->run_for(0.1);    # what more was to come comes now
    check_is(records_text(@$all), $CYCLE_EVENTS,
             "$what: the 'all' subscription gets each event once");
    check_is(records_text(@$lifecycle), $CYCLE_EVENTS,
             "$what: the lifecycle subscription (name $DOM) gets each event once");
    return;
}

# After stop: nothing of the monitor left in the loop.
sub check_stopped {
    my ($loop, $m, $what) = @_;
    $m->stop;
    check(!$m->is_running && !$m->is_connected, "$what: stopped, it is neither running nor connected");
    $loop->drain;
    if ($loop->introspects) {
        check($loop->is_idle, "$what: stopped, nothing is left in the loop", $loop->describe);
    }
    return;
}

# ==========================================================================
# A: every event of the test driver
# ==========================================================================

sub case_every_event {
    my ($loop, $d) = @_;
    my ($m, $errors) = monitor($d);
    my @got;
    $m->subscribe('all', sub { push @got, $_[0] });
    $m->start;
    check($m->is_connected, 'the monitor connected');
    check_is($m->uri, $d->uri, "the monitor's uri is the daemon's");
    my ($refused) = sort_errors($errors);
    my $expected_types = expected_registrations($refused);
    check_is(join(' ', $m->registered_events), $expected_types,
             'every libvirt event type the daemon knows is registered ('
             . split(' ', $expected_types) . ')');
    remark("refused by the daemon: @$refused");

    my $conn = Sys::Virt->new(uri => $d->uri);
    # the daemon saves the domain's image: a directory it may write to
    my $expected = 0;
    for my $step (DriverEvents::steps($d->dir . '/home')) {
        my ($what, $action, @want) = @$step;
        $expected += @want;
        my $from = @got;
        check_is(error_of { $action->($conn) }, '', "$what: the action works");
        $loop->run_until(sub { @got - $from >= @want }, 5 * $P);
        my @new = @got[$from .. $#got];
        check_is(scalar @new, scalar @want, "$what: " . @want . ' record(s) arrive',
                 map { Sys::Virt::Event::Monitor->describe($_) } @new);
        for my $i (0 .. $#want) {
            my @wrong = DriverEvents::mismatches($new[$i] || {}, $want[$i]);
            check(!@wrong, "$what: record " . ($i + 1) . " is $want[$i]{event}"
                           . ($want[$i]{type} ? " $want[$i]{type}" : ''), @wrong);
        }
        my @elsewhere = grep { ($_->{uri} // '') ne $d->uri } @new;
        check(!@elsewhere, "$what: the records' uri is the daemon's",
              map { $_->{uri} // 'undef' } @elsewhere);
    }
    $loop->run_for(0.3);
    check_is(scalar @got, $expected, "no record beyond the $expected expected");
    check_is(scalar connection_events(@got), 0, 'no close or reconnect');
    my (undef, $other) = sort_errors($errors);
    check_is(join(' | ', @$other), '', 'nothing else reported through on_error');
    undef $conn;
    check_stopped($loop, $m, 'the monitor');
    return;
}

# ==========================================================================
# B: restarts
# ==========================================================================

sub measure {
    my ($loop, $cycle) = @_;
    $loop->drain;
    figure('cycle', $cycle, fd_count(),
           $loop->introspects ? (scalar $loop->watches, scalar $loop->timers) : ('-', '-'),
           rss_kb());
    return;
}

sub case_restarts {
    my ($loop, $d, $cycles) = @_;
    my ($m, $errors) = monitor($d, backoff => [0.05, 0.5], keepalive => [1, 3]);
    my (@all, @lifecycle);
    $m->subscribe('all', sub { push @all, $_[0] });
    $m->subscribe('lifecycle', sub { push @lifecycle, $_[0] }, name => $DOM);
    $m->start;
    my $registered = join ' ', $m->registered_events;
    check_is($registered, expected_registrations((sort_errors($errors))[0]),
             'every event type the daemon knows is registered');
    check_events_flow($loop, $d, \@all, \@lifecycle, 'before any restart');
    measure($loop, 0);

    my @delays;
    for my $cycle (1 .. $cycles) {
        my $c = "cycle $cycle";
        @all = ();
        my $pid = $d->pid;
        check($d->signal('KILL'), "$c: SIGKILL sent to the daemon");
        check($d->wait_gone(5 * $P), "$c: the daemon is gone");
        $d->restart;
        my $t0 = Time::HiRes::time();
        $loop->run_until(sub { grep { $_->{event} eq 'reconnect' } @all }, 10 * $P);
        push @delays, sprintf '%.0f', (Time::HiRes::time() - $t0) * 1000;
        my @conn = connection_events(@all);
        check_is(join(' ', map { $_->{event} } @conn), 'close reconnect',
                 "$c: close, then reconnect, once each (within 10 s)");
        check(($conn[0]{reason} // '') =~ /\A(?:eof|error)\z/,
              "$c: the close reason is eof or error", 'reason: ' . show($conn[0]{reason}));
        check($pid != ($d->pid // 0), "$c: a new daemon");
        check($m->is_connected, "$c: connected again");
        check_is(join(' ', $m->registered_events), $registered,
                 "$c: every event type is registered again, once");
        check_events_flow($loop, $d, \@all, \@lifecycle, $c);
        measure($loop, $cycle);
    }
    remark('restart -> reconnect ms: ' . join ' ', @delays);
    my ($refused, $other) = sort_errors($errors);
    check_is(join(' | ', @$other), '', 'nothing else reported through on_error');
    check_is(scalar @$refused, scalar keys %{{ map { $_ => 1 } @$refused }},
             'a refused event type is reported once, not at every reconnection', @$refused);
    check_stopped($loop, $m, 'the monitor');
    return;
}

# ==========================================================================
# C: a daemon that stops answering
# ==========================================================================

my $STOPPED_FOR = 2;     # seconds the daemon stays stopped after the close

sub case_keepalive {
    my ($loop, $d) = @_;
    # the probe is not slowed by valgrind (maint/memcheck leaves it out)
    my ($m, $errors) = monitor($d, backoff => [0.05, 0.5], keepalive => [1, 2],
                               connect_timeout => 0.5);
    my (@all, @lifecycle);
    $m->subscribe([qw(lifecycle close reconnect)], sub { push @all, $_[0] });
    $m->subscribe('lifecycle', sub { push @lifecycle, $_[0] }, name => $DOM);
    $m->start;
    check_events_flow($loop, $d, \@all, \@lifecycle, 'before SIGSTOP');
    my $pid = $d->pid;

    @all = ();
    check($d->signal('STOP'), 'SIGSTOP sent to the daemon');
    my $t0 = Time::HiRes::time();
    $loop->run_until(sub { connection_events(@all) }, 8 * $P);
    my $closed = Time::HiRes::time() - $t0;
    my ($close) = connection_events(@all);
    check_is($close && $close->{event}, 'close', 'the monitor delivers close');
    check_is($close && $close->{reason}, 'keepalive', '... with reason keepalive');
    check($closed <= 5 * $P, sprintf('... within 5 s (%.2f s)', $closed));
    remark(sprintf 'SIGSTOP -> close %.2f s', $closed);

    # The attempts to connect again must not hold the loop while the
    # daemon stays stopped: a timer of the program's keeps firing.
    my $ticks = 0;
    my $ticker = Sys::Virt::Event::add_timeout(50, sub { $ticks++ });
    @$errors = ();
    my $stopped_for = $STOPPED_FOR * $P;
    $loop->run_for($stopped_for);
    Sys::Virt::Event::remove_timeout($ticker);
    check($ticks >= $stopped_for / 0.05 / 4 / $P,
          "while the daemon is stopped, the loop runs on ($ticks ticks of 50 ms in $stopped_for s)");
    check(scalar(grep { /\Areconnecting, attempt \d+: cannot connect to .*: no answer from the daemon within / } @$errors),
          'the attempts fail after connect_timeout', @$errors);
    check_is(join(' ', map { $_->{event} } connection_events(@all)), 'close', '... and no reconnect yet');

    kill 'CONT', $pid;
    my $t1 = Time::HiRes::time();
    $loop->run_until(sub { grep { $_->{event} eq 'reconnect' } @all }, 10 * $P);
    my $back = Time::HiRes::time() - $t1;
    check_is(join(' ', map { $_->{event} } connection_events(@all)), 'close reconnect',
             sprintf('after SIGCONT, reconnect arrives (%.2f s after it)', $back));
    my ($reconnect) = grep { $_->{event} eq 'reconnect' } @all;
    if ($reconnect) {
        check($reconnect->{down_seconds} >= $stopped_for,
              'it came once the daemon answered again',
              "down_seconds: $reconnect->{down_seconds}");
        remark("reconnect: attempts=$reconnect->{attempts} down_seconds=$reconnect->{down_seconds}");
    }
    check_is($d->pid, $pid, '... to the same daemon');
    check($d->alive, 'which still runs');
    check_events_flow($loop, $d, \@all, \@lifecycle, 'after the reconnection');
    remark('on_error: ' . join ' | ', @$errors) if @$errors;
    check_stopped($loop, $m, 'the monitor');
    return;
}

# ==========================================================================
# D: stop while waiting to try again
# ==========================================================================

# How the monitor is stopped while it waits to try again: stop() from
# the top level; stop() from its on_error callback, as the failed
# attempt is reported (the next wait is not armed); the last reference
# dropped (its DESTROY stops it: the loop's timers must not hold it).
my @STOPS = ('top level', 'on_error', 'drop');

sub case_stop_in_backoff {
    my ($loop, $d, $how) = @_;
    settle($loop);
    my @fds = fds();

    my ($weak, $stop_now, @errors);
    my $m = Sys::Virt::Event::Monitor->new(
        uri => $d->uri, backoff => [0.05, 0.1], keepalive => [1, 2],
        on_error => sub {
            push @errors, $_[0];
            $weak->stop if $stop_now && $weak && reconnect_errors(\@errors) >= 2;
        });
    Scalar::Util::weaken($weak = $m);
    my @all;
    $m->subscribe('all', sub { push @all, $_[0] });
    $m->start;
    check($m->is_connected, 'the monitor connected');
    $stop_now = $how eq 'on_error';
    check($d->signal('KILL') && $d->wait_gone(5 * $P), 'the daemon is killed');
    $loop->run_until(sub { reconnect_errors(\@errors) >= 2 }, 5 * $P);
    check_is(join(' ', map { $_->{event} } @all), 'close', 'close is delivered');
    my @failed = reconnect_errors(\@errors);
    check(@failed >= 2 && !grep({ !/\Areconnecting, attempt [0-9]+: cannot connect/ } @failed),
          'attempts to connect again fail and are reported', @failed);
    check(!$m->is_connected, 'the monitor is not connected');
    check_is($m->is_running ? 1 : 0, $how eq 'on_error' ? 0 : 1,
             $how eq 'on_error' ? 'stopped by on_error' : 'it is running');

    my $reported = @errors;
    if ($how eq 'top level') {
        $m->stop;
    } elsif ($how eq 'drop') {
        undef $m;
        check(!$weak, 'dropped, the monitor is gone');
    }
    $loop->drain;
    if ($loop->introspects) {
        # before another wait could have passed
        check($loop->is_idle, 'stopped, at once nothing is left in the loop', $loop->describe);
    }
    $loop->run_for(0.5);    # five times the longest wait
    check_is(scalar @errors, $reported, 'no attempt after stop', @errors[$reported .. $#errors]);
    check_is(join(' ', map { $_->{event} } @all), 'close', 'no record after stop');
    if ($m) {
        check(!$m->is_running && !$m->is_connected, 'the monitor is neither running nor connected');
    }
    $loop->drain;
    if ($loop->introspects) {
        check($loop->is_idle, 'nothing is left in the loop afterwards', $loop->describe);
    }
    check_is(join(' ', fds()), join(' ', @fds), 'open descriptors are as before the monitor');
    return;
}

# E: a subscriber of close stops the monitor, or drops the last
# reference to it.  libvirt holds the lock of its close callback while it
# runs it, and deregistering takes that lock: done from there, either
# would hang the process.
my @CLOSE_STOPS = ('stop', 'drop');

sub case_stop_on_close {
    my ($loop, $d, $how) = @_;
    settle($loop);
    my @fds = fds();

    my (@closes, @errors);
    my $m = Sys::Virt::Event::Monitor->new(
        uri => $d->uri, backoff => [0.05, 0.1], keepalive => [1, 2],
        on_error => sub { push @errors, $_[0] });
    my $weak = $m;
    Scalar::Util::weaken($weak);
    $m->subscribe('close', sub {
        push @closes, $_[0];
        $how eq 'stop' ? $weak->stop : undef $m;
    });
    $m->start;
    check($m->is_connected, 'the monitor connected');
    check($d->signal('KILL') && $d->wait_gone(5 * $P), 'the daemon is killed');
    $loop->run_until(sub { @closes }, 5 * $P);
    check_is(scalar @closes, 1, 'close is delivered');
    if ($how eq 'stop') {
        check(!$m->is_running && !$m->is_connected, 'its subscriber stopped the monitor');
    } else {
        check(!$weak, 'its subscriber dropped the monitor, which is gone');
    }
    $loop->run_for(0.3);    # three times the longest wait
    check_is(join(' ', reconnect_errors(\@errors)), '', 'no attempt to connect again');
    $loop->drain;
    if ($loop->introspects) {
        check($loop->is_idle, 'nothing is left in the loop afterwards', $loop->describe);
    }
    check_is(join(' ', fds()), join(' ', @fds), 'open descriptors are as before the monitor');
    return;
}

# Sys::Virt::Event::AnyEvent makes a pipe for 0 ms timers the first time
# one is armed, and keeps it: arming one before a case counts descriptors
# leaves that pipe out of what the monitor is measured on.
sub settle {
    my ($loop) = @_;
    my ($fired, $timer) = (0);
    $timer = Sys::Virt::Event::add_timeout(0, sub {
        Sys::Virt::Event::remove_timeout($timer) unless $fired++;
    });
    $loop->run_until(sub { $fired }, 5 * $P);
    $loop->drain;
    return;
}

# ==========================================================================
# The cases
# ==========================================================================

for my $kind (grep { $AVAILABLE{$_} } qw(default ev-native anyevent-perl)) {
    run_case("every event, $kind", $kind, \&case_every_event, timeout => 40);
}

my %figures;
for my $kind ($MAIN, grep { $_ ne $MAIN } @KINDS) {
    my $cycles = $kind eq $MAIN ? $RESTARTS : $SHORT_CYCLES;
    $figures{$kind} = run_case("$cycles restarts, $kind", $kind,
                               sub { case_restarts(@_, $cycles) },
                               timeout => 20 + 3 * $cycles);
    check_flat($kind, $figures{$kind}, $cycles);
}

for my $kind (grep { $AVAILABLE{$_} } $MAIN, 'anyevent-perl') {
    run_case("SIGSTOP, keepalive, $kind", $kind, \&case_keepalive, timeout => 30);
}

for my $how (@STOPS) {
    for my $kind (@KINDS) {
        run_case("stop during backoff ($how), $kind", $kind,
                 sub { case_stop_in_backoff(@_, $how) }, timeout => 20);
    }
}

for my $how (@CLOSE_STOPS) {
    for my $kind (@KINDS) {
        run_case("close stops the monitor ($how), $kind", $kind,
                 sub { case_stop_on_close(@_, $how) }, timeout => 20);
    }
}

# B's figures: every cycle as the first, RSS nearly flat.
sub check_flat {
    my ($kind, $figures, $cycles) = @_;
    my %at = map { $_->[1] => { fds => $_->[2], watches => $_->[3], timers => $_->[4],
                                rss => $_->[5] } }
             grep { $_->[0] eq 'cycle' } @$figures;
    my @cycles = sort { $a <=> $b } keys %at;
    is(scalar @cycles, $cycles + 1, "$kind: figures of every cycle, and of before the first")
        or return;
    my $first = $at{1};
    note("$kind: cycle fds watches timers rss_kB");
    note(join ' ', "$kind:", $_, @{$at{$_}}{qw(fds watches timers rss)}) for @cycles;
    for my $what (qw(fds watches timers)) {
        my @other = grep { $at{$_}{$what} ne $first->{$what} } 1 .. $cycles;
        ok(!@other, "$kind: $what after every cycle as after the first ($first->{$what})")
            or diag(join ', ', map { "cycle $_: $at{$_}{$what}" } @other);
    }
    my $growth = $at{$cycles}{rss} - $at{2}{rss};
    SKIP: {
        # valgrind and AddressSanitizer hold freed blocks back (their
        # free queue and quarantine): RSS then measures them, not the monitor
        skip("$kind: RSS under valgrind is valgrind's", 1) if $ENV{SVE_UNDER_MEMCHECK};
        skip("$kind: RSS under AddressSanitizer is its quarantine's", 1)
            if $ENV{SVE_UNDER_SANITIZE};
        cmp_ok($growth, '<', $RSS_LIMIT_KB,
               "$kind: RSS grew by less than $RSS_LIMIT_KB kB from cycle 2 to cycle $cycles");
    }
    diag(sprintf '%s, %d restarts: fds %s, watches %s, timers %s after each; '
                 . 'RSS %d kB after cycle 1, %d after cycle 2, %d after cycle %d (%+d kB)',
         $kind, $cycles, @$first{qw(fds watches timers rss)}, $at{2}{rss},
         $at{$cycles}{rss}, $cycles, $growth);
    return;
}

done_testing;

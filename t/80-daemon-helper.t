use strict;
use warnings;

# The private libvirtd the daemon tests rely on (t/lib/PrivateLibvirtd.pm):
# it starts unprivileged in its own short directory and answers on its
# socket; it can be paused, resumed, killed and restarted in the same
# directory; and it is always stopped and reaped, when the test drops it,
# when the test dies, and when EV reaps it first.

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use TestUtil qw(in_child);
use PrivateLibvirtd;

BEGIN {
    my $why = PrivateLibvirtd::unavailable();
    plan skip_all => "no private libvirtd: $why" if $why;
}

use IO::Socket::UNIX;

# The field of /proc/PID/status, or undef when there is no such process.
sub proc_status {
    my ($pid, $field) = @_;
    open my $fh, '<', "/proc/$pid/status" or return;
    while (my $line = <$fh>) {
        return $1 if $line =~ /^\Q$field\E:\s*(.*)/;
    }
    return;
}

sub state_of {
    my ($pid) = @_;
    my $state = proc_status($pid, 'State');
    return defined $state ? substr($state, 0, 1) : 'gone';
}

# Waits (bounded) for a signal sent to take effect.
sub wait_state {
    my ($pid, $re) = @_;
    my $deadline = time + 5;
    select undef, undef, undef, 0.005
        until state_of($pid) =~ $re || time > $deadline;
    return state_of($pid);
}

sub connectable {
    my ($path) = @_;
    my $sock = IO::Socket::UNIX->new(Peer => $path) or return 0;
    return 1;
}

# -- start -----------------------------------------------------------------
my $d = PrivateLibvirtd->start(conf => ['keepalive_interval = 1']);
my $dir = $d->dir;
my $pid = $d->pid;
ok(-d $dir, 'it has a directory of its own');
ok(length($d->socket) <= 107, 'whose socket path fits in sun_path');
is($d->uri, "test+unix:///default?socket=$dir/run/libvirt-sock",
   'the URI is the test driver over the remote driver, at that socket');
ok($pid && $d->alive, "the daemon runs (pid $pid)");
ok(connectable($d->socket), 'and accepts connections');
like(readlink("/proc/$pid/exe") // '', qr{/libvirtd\z}, 'it is libvirtd itself, not a wrapper');
my ($ruid, $euid) = split ' ', proc_status($pid, 'Uid') // '';
if ($> == 0) {
    my $nobody = getpwnam 'nobody';
    is("$ruid $euid", "$nobody $nobody", 'started by root, it runs as nobody');
    is(join(' ', split ' ', proc_status($pid, 'Groups') // ''), (getpwnam 'nobody')[3],
       "with nobody's group only");
} else {
    is("$ruid $euid", "$> $>", 'it runs as the user who started it');
}
my $conf = do { local (@ARGV, $/) = "$dir/libvirtd.conf"; <> };
like($conf, qr/\Akeepalive_interval = 1\n/, 'extra configuration comes first');
like($conf, qr{^unix_sock_dir = "\Q$dir\E/run"$}m, 'the socket lives in its directory');

# -- pause, resume, kill, restart ----------------------------------------
ok($d->signal('STOP'), 'SIGSTOP');
is(wait_state($pid, qr/T/), 'T', 'it is stopped');
ok($d->alive, 'a stopped daemon still counts as alive');
ok($d->signal('CONT'), 'SIGCONT');
isnt(wait_state($pid, qr/[^T]/), 'T', 'it runs again');

ok($d->signal('KILL'), 'SIGKILL');
ok($d->wait_gone(5), 'it is gone within 5 s');
ok(!$d->alive, 'and no longer alive');
is(state_of($pid), 'gone', 'waiting reaped it: no zombie is left');
ok(!$d->signal('TERM'), 'a gone daemon is not signalled');

my $uri = $d->uri;
$d->restart;
my $pid2 = $d->pid;
isnt($pid2, $pid, "restart starts a new daemon (pid $pid2)");
is($d->dir, $dir, 'in the same directory');
is($d->uri, $uri, 'at the same URI');
ok($d->alive && connectable($d->socket), 'which runs and accepts connections');

ok($d->restart, 'a restart of a running daemon');
my $pid3 = $d->pid;
is(state_of($pid2), 'gone', 'stops and reaps the old one');
ok($d->alive, 'and starts the new one');

# a stopped daemon still stops: TERM waits for CONT
$d->signal('STOP');
ok($d->stop, 'stop() ends a paused daemon');
is(state_of($pid3), 'gone', 'and reaps it');
ok(-d $dir, 'the directory stays until the object goes');
undef $d;
ok(!-e $dir, 'dropping the object removes the directory');

# -- always stopped: the test dies, or ends with it still running ----------
my @HELPER = ($^X, "-I$FindBin::Bin/lib", '-MPrivateLibvirtd', '-MPOSIX', '-e', '$| = 1;');
for my $case (
    # _exit skips END: only the unwinding of the die can have stopped it
    ['dies while holding it in a lexical',
     'eval { my $d = PrivateLibvirtd->start; print $d->pid, " ", $d->dir, "\n";'
     . ' die "on purpose\n" }; POSIX::_exit(4)'],
    ['dies with it in a global (END)',
     'our $d = PrivateLibvirtd->start; print $d->pid, " ", $d->dir, "\n"; die "on purpose\n"'],
    ['exits with it paused',
     'our $d = PrivateLibvirtd->start; $d->signal("STOP"); print $d->pid, " ", $d->dir, "\n"; exit 3'],
) {
    my ($name, $code) = @$case;
    # exec keeps the alarm in_child set: the helper is killed if it hangs
    my $r = in_child(sub { exec @HELPER[0 .. $#HELPER - 1], $HELPER[-1] . $code or die "exec: $!" }, timeout => 15);
    my ($child_pid, $child_dir) = $r->{output} =~ /^(\d+) (\S+)$/m;
    ok(!$r->{timed_out} && $r->{exit}, "a test that $name ends, failing")
        or diag($r->{output});
    ok($child_pid, "$name: it had started a daemon") or next;
    is(state_of($child_pid), 'gone', "$name: the daemon was stopped");
    ok(!-e $child_dir, "$name: its directory was removed");
}

# -- under EV, whose SIGCHLD handler reaps every child -------------------
SKIP: {
    # EV is loaded in the child only: this process keeps its own waitpid
    skip('EV is not installed', 4) unless grep { !ref && -f "$_/EV.pm" } @INC;
    my $r = in_child(sub {
        require EV;
        my %reaped;
        my $w = EV::child(0, 0, sub { $reaped{$_[0]->rpid} = 1 });
        my $e = PrivateLibvirtd->start;
        my $first = $e->pid;
        $e->signal('KILL');
        # let EV see SIGCHLD and reap, as it does while a test's loop runs
        my $t = EV::timer(0.3, 0, sub { EV::break() });
        EV::run();
        print "reaped_by_ev=", ($reaped{$first} ? 1 : 0), "\n";
        print "gone=", ($e->wait_gone(5) ? 1 : 0), "\n";
        $e->restart;
        print "restarted=", ($e->alive && $e->pid != $first ? 1 : 0), "\n";
        my $second = $e->pid;
        my $t2 = EV::timer(0.05, 0, sub { EV::break() });
        EV::run();
        print "stopped=", ($e->stop ? 1 : 0), "\n";
        print "second=", state_of($second), "\n";
        undef $e;
    }, timeout => 20);
    my %out = $r->{output} =~ /^(\w+)=(.*)$/mg;
    is($r->{exit}, 0, 'under EV: the case ends normally') or diag($r->{output});
    is($out{reaped_by_ev}, 1, 'under EV: EV reaped the killed daemon itself');
    is($out{gone}, 1, 'under EV: and wait_gone still sees that it is gone');
    ok($out{restarted} && $out{stopped} && $out{second} eq 'gone',
       'under EV: restart and stop work, and leave nothing running');
}

done_testing;

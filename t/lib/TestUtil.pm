package TestUtil;

# Helpers shared by the tests: run code in a child process with a time
# limit (libvirt accepts one event loop per process, and a risky case
# must not take the test file down), and find out what is installed.

use strict;
use warnings;

use Exporter 'import';
use POSIX ();
use Time::HiRes ();

our @EXPORT_OK = qw(in_child child_case error_of have_sys_virt report
                    anyevent_run_until anyevent_run_for default_run_until);

# in_child(sub { ... }, timeout => SECONDS)
# Runs the code in a forked child with STDOUT and STDERR captured.  The
# child exits 0 when the code returns, 1 when it dies (the error is
# printed), or whatever the code passes to exit.  Returns a hash:
#   exit    exit status (undef if killed by a signal)
#   signal  the signal that ended it (0 if none)
#   output  STDOUT and STDERR together
#   timed_out  true when the time limit killed it
sub in_child {
    my ($code, %opts) = @_;
    my $timeout = $opts{timeout} || 20;

    pipe(my $r, my $w) or die "pipe: $!";
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        close $r;
        open STDOUT, '>&', $w or POSIX::_exit(98);
        open STDERR, '>&', $w or POSIX::_exit(98);
        STDOUT->autoflush(1);
        STDERR->autoflush(1);
        alarm $timeout;
        my $ok = eval { $code->(); 1 };
        print STDERR "died: $@" unless $ok;
        STDOUT->flush;
        STDERR->flush;
        # skip END blocks and destructors of the parent's objects
        POSIX::_exit($ok ? 0 : 1);
    }
    close $w;
    my $output = '';
    my $deadline = time + $timeout + 5;
    my $timed_out = 0;
    local $SIG{ALRM} = sub { $timed_out = 1; kill 'KILL', $pid };
    alarm $timeout + 5;
    while (1) {
        my $n = sysread($r, my $buf, 65536);
        last unless $n;
        $output .= $buf;
    }
    waitpid($pid, 0);
    my $status = $?;
    alarm 0;
    close $r;
    return {
        exit      => ($status & 127) ? undef : $status >> 8,
        signal    => $status & 127,
        output    => $output,
        timed_out => $timed_out || (($status & 127) == POSIX::SIGALRM()),
    };
}

# child_case($name, sub { ... }, timeout => SECONDS)
# Runs the code with in_child and asserts (Test::More) that it finished in
# time, without a signal, exiting 0.  The child reports by printing
# "name=value" lines; returns them as a hash, with the whole output
# under ''.
sub child_case {
    my ($name, $code, %opts) = @_;
    my $r = in_child($code, timeout => $opts{timeout} || 30);
    Test::More::ok(!$r->{timed_out}, "$name: finished within the time limit");
    Test::More::is($r->{signal}, 0, "$name: not killed by a signal");
    Test::More::is($r->{exit}, 0, "$name: exited normally")
        or Test::More::diag("child output:\n$r->{output}");
    my %out = ('' => $r->{output});
    for my $line (split /\n/, $r->{output}) {
        $out{$1} = $2 if $line =~ /^(\w+)=(.*)\z/;
    }
    return \%out;
}

# The error of a block, on one line, or "" when it did not die.
sub error_of (&) {
    my ($code) = @_;
    local $@;
    return eval { $code->(); 1 } ? '' : do { (my $e = "$@") =~ s/\n+\z//; $e =~ s/\n/ | /g; $e };
}

# Runs the AnyEvent loop (the caller has loaded AnyEvent) until $cond
# returns true or $seconds pass; true if it did.
sub anyevent_run_until {
    my ($cond, $seconds) = @_;
    return 1 if $cond->();
    my $cv = AnyEvent->condvar;
    my $check = AnyEvent->timer(after => 0.002, interval => 0.002,
                                cb => sub { $cv->send if $cond->() });
    my $limit = AnyEvent->timer(after => $seconds, cb => sub { $cv->send });
    $cv->recv;
    return $cond->() ? 1 : 0;
}

# In a child: prints each key=value on a line of its own, for the parent
# to read back (child_case, DaemonCase::run_case); undef prints as ''.
sub report {
    my (%kv) = @_;
    for my $key (sort keys %kv) {
        my $value = defined $kv{$key} ? $kv{$key} : '';
        $value =~ s/\n/ | /g;
        print "$key=$value\n";
    }
    return;
}

# Runs the AnyEvent loop (the caller has loaded AnyEvent) for $seconds.
sub anyevent_run_for {
    my ($seconds) = @_;
    my $cv = AnyEvent->condvar;
    AnyEvent->now_update;
    my $limit = AnyEvent->timer(after => $seconds, cb => sub { $cv->send });
    $cv->recv;
    return;
}

# Iterates libvirt's default loop (the caller registered it, with a timer
# that bounds each iteration) until $cond returns true or $seconds pass;
# returns $cond's last value.
sub default_run_until {
    my ($cond, $seconds) = @_;
    my $deadline = Time::HiRes::time() + $seconds;
    until ($cond->()) {
        return $cond->() if Time::HiRes::time() > $deadline;
        Sys::Virt::Event::run_default();
    }
    return 1;
}

sub have_sys_virt {
    local $@;
    return eval { require Sys::Virt; 1 } ? 1 : 0;
}

1;

package PrivateLibvirtd;

# A private, unprivileged libvirtd for tests, reached through the remote
# driver at test+unix:///default?socket=DIR/run/libvirt-sock.  Everything
# it touches lives in one short temporary directory; under root it runs
# as nobody, since a root libvirtd writes to /run/libvirt whatever its
# configuration says.  Its only useful driver is the test driver, which is
# built into libvirt.so: the driver directory it is given is empty.
#
#   my $d = PrivateLibvirtd->start;       # dies, with the daemon's log, if it cannot
#   my $conn = Sys::Virt->new(uri => $d->uri);
#   $d->signal('KILL'); $d->wait_gone(5);
#   $d->restart;                          # same directory, same URI
#   $d->stop;                             # TERM, then KILL; reaps
#
# The object is a guard: when the process that started the daemon drops
# it, or exits (END), the daemon is stopped and the directory removed.
# A daemon may be signalled, stopped or restarted from a forked process
# too; the pid is kept in a file in the directory, not only in memory.
#
# A dead daemon can still be our unreaped child, and under EV a SIGCHLD
# handler may reap it before we do, so whether it runs is read from
# /proc/PID (some thread of it that is not a zombie), never learnt from
# waitpid alone; waitpid only reaps, without blocking.

use strict;
use warnings;

use Carp ();
use File::Path ();
use File::Spec ();
use File::Temp ();
use IO::Socket::UNIX ();
use POSIX ();
use Scalar::Util ();
use Time::HiRes ();

our $LIBVIRTD = $ENV{LIBVIRTD} || '/usr/sbin/libvirtd';

# the daemon exits by itself after this many idle seconds: the last
# resort if a test is killed before it can stop it
our $IDLE_TIMEOUT = 120;

# sun_path holds 108 bytes, with the terminating NUL
my $MAX_SOCKET_PATH = 107;

# Directories owned by this process => the object, weakly held (END).
my %LIVE;

# Why a daemon cannot be started here, or undef when it can.
sub unavailable {
    return "no libvirtd at $LIBVIRTD (Debian: apt-get install libvirt-daemon)"
        unless -x $LIBVIRTD;
    return 'not on Linux (/proc is needed to watch the daemon)'
        unless -d '/proc/self';
    return 'running as root, but there is no user nobody to run libvirtd as'
        if $> == 0 && !defined getpwnam('nobody');
    return;
}

# PrivateLibvirtd->start(conf => [LINES], ready_timeout => SECONDS)
# conf lines come first in libvirtd.conf (for a repeated key libvirtd
# uses the first one), e.g. 'keepalive_interval = 1'.
sub start {
    my ($class, %opts) = @_;
    my $why = unavailable();
    Carp::croak("PrivateLibvirtd: $why") if $why;

    my $self = bless {
        dir           => _short_tempdir(),
        conf          => $opts{conf} || [],
        ready_timeout => $opts{ready_timeout} || 10,
        owner         => $$,
        spawned       => {},
    }, $class;
    $LIVE{$self->{dir}} = $self;
    Scalar::Util::weaken($LIVE{$self->{dir}});

    if (length($self->socket) > $MAX_SOCKET_PATH) {
        my $path = $self->socket;
        $self->cleanup;
        Carp::croak("PrivateLibvirtd: socket path too long: $path");
    }
    $self->_prepare_dir;
    $self->_spawn;
    return $self;
}

sub dir    { return $_[0]{dir} }
sub socket { return "$_[0]{dir}/run/libvirt-sock" }
sub uri    { return 'test+unix:///default?socket=' . $_[0]->socket }

# The pid of the daemon last started in this directory, by any process.
sub pid {
    my ($self) = @_;
    open my $fh, '<', "$self->{dir}/daemon.pid" or return;
    my $pid = <$fh>;
    return defined $pid && $pid =~ /^(\d+)$/ ? $1 : undef;
}

# True while our daemon runs (a stopped process runs; a zombie does not).
sub alive {
    my ($self) = @_;
    my $pid = $self->pid;
    return $pid && _running($pid) && $self->_is_ours($pid);
}

# Sends a signal (name or number) to the daemon; false if it is not running.
sub signal {
    my ($self, $sig) = @_;
    my $pid = $self->pid;
    return 0 unless $pid && _running($pid) && $self->_is_ours($pid);
    return kill($sig, $pid);
}

# Waits until the daemon is no longer running; true if it went in time.
sub wait_gone {
    my ($self, $seconds) = @_;
    my $pid = $self->pid or return 1;
    my $deadline = Time::HiRes::time() + (defined $seconds ? $seconds : 5);
    while (1) {
        my $running = _running($pid);
        if (!$running) {
            $self->_reap;
            return 1 unless $self->{spawned}{$pid};    # reaped, or not our child
        }
        return !$running if Time::HiRes::time() > $deadline;
        Time::HiRes::sleep(0.005);
    }
}

# TERM (and CONT, in case it was stopped), then KILL if it lingers; the
# directory stays.  Returns true when no daemon runs afterwards.
sub stop {
    my ($self) = @_;
    if ($self->signal('TERM')) {
        $self->signal('CONT');
        $self->signal('KILL') unless $self->wait_gone(5);
    }
    my $gone = $self->wait_gone(5);
    $self->_reap;
    return $gone;
}

# Stops the daemon and starts a new one in the same directory.
sub restart {
    my ($self) = @_;
    $self->stop or Carp::croak('PrivateLibvirtd: the old daemon does not go away');
    $self->_spawn;
    return $self;
}

# The daemon's log and output, for diagnostics.
sub log_text {
    my ($self) = @_;
    my $text = '';
    for my $name (qw(libvirtd.stdout libvirtd.log)) {
        open my $fh, '<', "$self->{dir}/$name" or next;
        local $/;
        my $content = <$fh>;
        $text .= "--- $name\n" . (defined $content ? $content : '');
    }
    return $text;
}

# Stops the daemon and removes the directory (only in the process that
# made it: a forked copy of the object leaves both alone).
sub cleanup {
    my ($self) = @_;
    return unless $self->{owner} == $$ && -d $self->{dir};
    $self->stop;
    delete $LIVE{$self->{dir}};
    File::Path::remove_tree($self->{dir});
    return;
}

sub DESTROY {
    my ($self) = @_;
    local ($., $@, $!, $^E, $?);
    $self->cleanup;
    return;
}

END {
    local $?;
    $_->cleanup for grep { defined } values %LIVE;
}

# -- internals -------------------------------------------------------------

sub _short_tempdir {
    my $base = -d '/tmp' && -w _ ? '/tmp' : File::Spec->tmpdir;
    return File::Temp::tempdir('lvdXXXXXX', DIR => $base, CLEANUP => 0);
}

sub _prepare_dir {
    my ($self) = @_;
    my $dir = $self->{dir};
    my @dirs = map { "$dir/$_" } qw(run nodrivers home cfg cache xdg);
    for my $d (@dirs) {
        mkdir $d, 0700 or Carp::croak("PrivateLibvirtd: mkdir $d: $!");
    }
    my $conf = "$dir/libvirtd.conf";
    open my $fh, '>', $conf or Carp::croak("PrivateLibvirtd: $conf: $!");
    print {$fh} map { "$_\n" } @{$self->{conf}},
        qq{unix_sock_dir = "$dir/run"},
        q{unix_sock_rw_perms = "0700"},
        q{auth_unix_rw = "none"},
        q{auth_unix_ro = "none"},
        qq{log_outputs = "3:file:$dir/libvirtd.log"};
    close $fh or Carp::croak("PrivateLibvirtd: $conf: $!");
    if ($> == 0) {
        my ($uid, $gid) = (getpwnam 'nobody')[2, 3];
        chown $uid, $gid, $dir, @dirs, $conf
            or Carp::croak("PrivateLibvirtd: chown $dir: $!");
    }
    return;
}

sub _spawn {
    my ($self) = @_;
    my $dir = $self->{dir};
    unlink $self->socket;    # a killed daemon leaves its socket behind

    my @cmd = ($LIBVIRTD, '--config', "$dir/libvirtd.conf",
               '--pid-file', "$dir/run/libvirtd.pid",
               '--timeout', $IDLE_TIMEOUT);
    my $pid = fork;
    Carp::croak("PrivateLibvirtd: fork: $!") unless defined $pid;
    if ($pid == 0) {
        _exec_daemon($dir, @cmd);    # does not return
    }
    $self->{spawned}{$pid} = 1;
    _write_file("$dir/daemon.pid", "$pid\n");

    my $deadline = Time::HiRes::time() + $self->{ready_timeout};
    until (_connectable($self->socket)) {
        my $problem = !_running($pid) ? 'libvirtd exited during startup'
                    : Time::HiRes::time() > $deadline ? 'libvirtd did not get ready in time'
                    : undef;
        if ($problem) {
            my $log = $self->log_text;
            $self->stop;
            Carp::croak("PrivateLibvirtd: $problem\n$log");
        }
        Time::HiRes::sleep(0.01);
    }
    return;
}

# In the forked child: drop root, clean environment and descriptors, exec.
sub _exec_daemon {
    my ($dir, @cmd) = @_;
    eval {
        if ($> == 0) {
            my ($uid, $gid) = (getpwnam 'nobody')[2, 3];
            $) = "$gid $gid";    # effective gid and the supplementary groups
            POSIX::setgid($gid) or die "setgid: $!\n";
            POSIX::setuid($uid) or die "setuid: $!\n";
            die "could not drop root\n"
                if $< == 0 || $> == 0 || $) ne "$gid $gid";
        }
        %ENV = (
            PATH               => '/usr/sbin:/usr/bin:/sbin:/bin',
            HOME               => "$dir/home",
            XDG_CONFIG_HOME    => "$dir/cfg",
            XDG_CACHE_HOME     => "$dir/cache",
            XDG_RUNTIME_DIR    => "$dir/xdg",
            LIBVIRT_DRIVER_DIR => "$dir/nodrivers",
        );
        # never hold the test's pipes open: a reader would wait for EOF
        open STDIN, '<', '/dev/null' or die "stdin: $!\n";
        open STDOUT, '>', "$dir/libvirtd.stdout" or die "stdout: $!\n";
        open STDERR, '>&', \*STDOUT or die "stderr: $!\n";
        # an event loop may have blocked the signals it watches (EV
        # blocks SIGCHLD), and exec keeps the mask
        $SIG{$_} = 'DEFAULT' for qw(PIPE CHLD INT TERM ALRM);
        POSIX::sigprocmask(POSIX::SIG_SETMASK(), POSIX::SigSet->new)
            or die "sigprocmask: $!\n";
        exec { $cmd[0] } @cmd or die "exec $cmd[0]: $!\n";
    };
    print STDERR "PrivateLibvirtd: $@";
    POSIX::_exit(127);
}

sub _connectable {
    my ($path) = @_;
    my $sock = IO::Socket::UNIX->new(Peer => $path) or return 0;
    close $sock;
    return 1;
}

# Some thread of it exists and is not a zombie.  kill 0 succeeds on
# zombies, and the first thread of a multithreaded process shows as a
# zombie while its other threads are still exiting: it cannot be reaped
# yet, and may still hold its sockets.
sub _running {
    my ($pid) = @_;
    opendir my $dh, "/proc/$pid/task" or return 0;
    for my $tid (grep { /^\d+$/ } readdir $dh) {
        open my $fh, '<', "/proc/$pid/task/$tid/status" or next;
        while (my $line = <$fh>) {
            next unless $line =~ /^State:\s*(\S)/;
            return 1 if $1 ne 'Z' && $1 ne 'X';
            last;
        }
    }
    return 0;
}

# Guards against pid reuse: the process runs our configuration.
sub _is_ours {
    my ($self, $pid) = @_;
    open my $fh, '<', "/proc/$pid/cmdline" or return 0;
    local $/;
    my $cmdline = <$fh>;
    return defined $cmdline
        && index($cmdline, "--config\0$self->{dir}/libvirtd.conf\0") >= 0;
}

# Reaps the daemons this process started that have exited (if a SIGCHLD
# handler did not already).
sub _reap {
    my ($self) = @_;
    local $?;
    for my $pid (keys %{$self->{spawned}}) {
        my $r = waitpid($pid, POSIX::WNOHANG());
        delete $self->{spawned}{$pid} if $r == $pid || $r == -1;
    }
    return;
}

sub _write_file {
    my ($path, $content) = @_;
    open my $fh, '>', $path or Carp::croak("PrivateLibvirtd: $path: $!");
    print {$fh} $content;
    close $fh or Carp::croak("PrivateLibvirtd: $path: $!");
    return;
}

1;

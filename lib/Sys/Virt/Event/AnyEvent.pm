package Sys::Virt::Event::AnyEvent;

use 5.018;
use strict;
use warnings;

use Carp ();
use Scalar::Util ();
use AnyEvent ();
use IO::Poll qw(POLLIN POLLOUT POLLERR POLLHUP POLLNVAL);
use Sys::Virt::Event qw(:constants);

our $VERSION = '0.02';

our @ISA = ('Sys::Virt::Event');

# The object registered through this class's register().
my $REGISTERED;

# Every object of the class, weakly held, so that the frees still queued
# at program exit run in END, before global destruction.
my %LIVE;

my $READ_WRITE = HANDLE_READABLE | HANDLE_WRITABLE;
my $ALWAYS = HANDLE_ERROR | HANDLE_HANGUP;

# What the backend needs, known once the first watcher is made (AnyEvent
# picks its backend then, and not before: a program may load EV after
# registering the loop): see _backend.
my $BACKEND;        # AnyEvent's backend class, once known
my $SWEEP;          # watched descriptors need checking (pure-Perl backend)

# How often, in seconds, the pure-Perl backend's watched descriptors are
# checked for one closed behind the loop's back (see _sweep).
my $SWEEP_SECONDS = 1;

sub new {
    my ($class) = @_;
    my $self = bless {
        handles    => {},   # watch id => entry; entry->{io}: the watchers
        timers     => {},   # timer id => entry; entry->{w}: the watcher
        old_handles => {},  # the same, inherited from a parent process:
        old_timers  => {},  # silent (see _forked)
        zero       => {},   # timer id => 1 for timers of interval 0
        zero_w     => undef, # the watcher that fires them, see _arm
        sweep      => undef, # the timer of _sweep, while it is needed
        pending    => [],   # [ff, opaque] of removed entries, to free
        next_watch => 1,
        next_timer => 1,
        forks      => $Sys::Virt::Event::FORKS,  # whose watchers, see _forked
    }, $class;
    Scalar::Util::weaken($LIVE{Scalar::Util::refaddr($self)} = $self);
    return $self;
}

# As a class method, on AnyEvent's EV backend, the native loop unless
# native => 0 asks for this one.
sub register {
    my ($self, %opt) = @_;
    my @unknown = grep { $_ ne 'native' } keys %opt;
    Carp::croak("Sys::Virt::Event::AnyEvent::register: unknown option '$unknown[0]'")
        if @unknown;
    if (!ref $self) {
        return $REGISTERED if $REGISTERED && $REGISTERED->isa($self);
        my $native = ($opt{native} // 1) ? _native_loop() : undef;
        return $native->register if $native;
        $self = $self->new;
    }
    $self->SUPER::register;
    $REGISTERED //= $self;
    return $self;
}

# Sys::Virt::Event::EV's class when AnyEvent runs on EV and the native
# loop was built; AnyEvent chooses its backend here, if it has not yet.
sub _native_loop {
    return if AnyEvent::detect() ne 'AnyEvent::Impl::EV';
    return if !eval { require Sys::Virt::Event::EV; 1 };
    return 'Sys::Virt::Event::EV';
}

# ---- watches -------------------------------------------------------------

# The entry is listed only once its watchers exist: when making them dies,
# libvirt is told the add failed, and nothing of it stays behind.  In a
# child, the loop learns that it is one first, so that what is added here
# is not taken for the parent's (see _forked).
sub add_handle {
    my ($self, $fd, $events, $cb, $opaque, $ff) = @_;
    $self->_forked if $self->{forks} != $Sys::Virt::Event::FORKS;
    my $watch = $self->{next_watch}++;
    my $h = {
        fd => $fd, cb => $cb, opaque => $opaque, ff => $ff,
        events => 0, poll => 0, want => '', io => [],
    };
    _watch($self, $watch, $h, $events);
    $self->{handles}{$watch} = $h;
    return $watch;
}

# A watch inherited from the parent process is not found here once the
# loop knows it runs in a child, and _watch finds that out before it
# touches the watchers: it stays silent whatever libvirt asks (see
# _forked).
sub update_handle {
    my ($self, $watch, $events) = @_;
    my $h = $self->{handles}{$watch} or return;
    _watch($self, $watch, $h, $events);
    return;
}

# The entry goes once its free is queued (see _defer_free).  Dropping its
# watchers in a child is safe only once the loop knows (see _forked).
sub remove_handle {
    my ($self, $watch) = @_;
    $self->_forked if $self->{forks} != $Sys::Virt::Event::FORKS;
    my $table = exists $self->{handles}{$watch} ? $self->{handles} : $self->{old_handles};
    my $h = $table->{$watch} or return -1;
    $self->_defer_free($h);
    delete $table->{$watch};
    return 0;
}

# (Re)creates the watchers of a watch when a new mask needs others: "r"
# for HANDLE_READABLE, "w" for HANDLE_WRITABLE, none for 0.  A mask of
# only HANDLE_ERROR or HANDLE_HANGUP waits for readability, the closest
# AnyEvent has (see _dispatch_watch).
#
# The new watchers are all made before anything is recorded, and replace
# the old ones in one assignment: when making one dies, the watch keeps
# its old watchers and mask, so a later update with the same mask is not
# taken for a no-op.  What says which watchers exist ("want") is
# recorded after them, and the mask last: a die between two of these
# steps leaves a state that the next update completes.
#
# Neither making nor dropping watchers may happen in a child before the
# loop knows it is one (see _forked), and then not for the parent's.
sub _watch {
    my ($self, $watch, $h, $events) = @_;
    my $want = (($events & HANDLE_READABLE) || ($events && !($events & $READ_WRITE)) ? 'r' : '')
        . (($events & HANDLE_WRITABLE) ? 'w' : '');
    if ($want ne $h->{want} || $h->{suspended}) {
        if ($self->{forks} != $Sys::Virt::Event::FORKS) {
            $self->_forked;
            return if $self->{old_handles}{$watch};
        }
        my @io;
        if ($want ne '') {
            _backend() unless $BACKEND;
            Scalar::Util::weaken(my $weak = $self);
            my $cb = sub { $weak->_dispatch_watch($watch) if $weak };
            @io = map { AnyEvent->io(fh => $h->{fd}, poll => $_, cb => $cb) } split //, $want;
            $self->{sweep} ||= AnyEvent->timer(after => $SWEEP_SECONDS, interval => $SWEEP_SECONDS,
                                               cb => sub { $weak->_sweep if $weak })
                if $SWEEP;
        }
        $h->{io} = \@io;        # the old watchers go now
        $h->{want} = $want;
        $h->{suspended} = 0;
    }
    $h->{events} = $events;
    $h->{poll} = (($events & HANDLE_READABLE) ? POLLIN : 0)
        | (($events & HANDLE_WRITABLE) ? POLLOUT : 0);
    return;
}

# AnyEvent says only "readable" or "writable", and a backend may wake us
# for a condition an earlier callback has since consumed.  A zero-timeout
# poll() of this one descriptor gives the conditions as they are now,
# including POLLERR and POLLHUP, which poll() reports whatever was asked:
# the events libvirt's own loops would report.
sub _dispatch_watch {
    my ($self, $watch) = @_;
    return $self->_forked if $self->{forks} != $Sys::Virt::Event::FORKS;  # the parent's watcher
    my $h = $self->{handles}{$watch} or return;    # removed meanwhile
    my @pollfd = ($h->{fd}, $h->{poll});
    # _poll() writes each descriptor's revents over its mask, unless it
    # fails (interrupted: the watcher fires again)
    my $ready = IO::Poll::_poll(0, @pollfd);
    return if $ready < 0;
    my $revents = $ready ? $pollfd[1] : 0;
    return $self->_closed($watch, $h) if $revents & POLLNVAL;
    my $events = 0;
    $events |= HANDLE_READABLE if $revents & POLLIN;
    $events |= HANDLE_WRITABLE if $revents & POLLOUT;
    $events |= HANDLE_ERROR if $revents & POLLERR;
    $events |= HANDLE_HANGUP if $revents & POLLHUP;
    $events &= $h->{events} | $ALWAYS;
    if (!$events) {
        # Readable, but only error or hangup was asked for: waiting on
        # would spin, so the watch sleeps until its mask is set again.
        if (!($h->{events} & $READ_WRITE)) {
            $h->{suspended} = 1;
            $h->{io} = [];
        }
        return;
    }
    $self->_run_handle_callback($watch, $h->{fd}, $events, $h->{cb}, $h->{opaque});
    return;
}

# The watch's descriptor was closed while the watch was live (poll() says
# POLLNVAL).  The callback gets HANDLE_ERROR, so that its owner learns of
# it and removes the watch, and the watch sleeps until its mask is next
# set: a backend that noticed would otherwise wake for it again and again
# (EV's poll and select backends have stopped the watcher already).  The
# watchers go before the callback runs, which may remove or update the
# watch.
sub _closed {
    my ($self, $watch, $h) = @_;
    $h->{suspended} = 1;
    $h->{io} = [];
    $self->_run_handle_callback($watch, $h->{fd}, HANDLE_ERROR, $h->{cb}, $h->{opaque});
    return;
}

# AnyEvent's pure-Perl backend waits with select(), which fails as a whole
# (EBADF) when any descriptor in its sets is closed: the backend then
# spins, and no I/O watcher of the process fires again, ours or anyone's;
# timers still run.  So, on that backend only, a timer looks at every
# live watch's descriptor now and then, and hands a closed one to
# _closed, whose dropping of the watchers lets select() work again.  It
# costs one poll() per period and stops when no watch has watchers.
sub _sweep {
    my ($self) = @_;
    return $self->_forked if $self->{forks} != $Sys::Virt::Event::FORKS;  # the parent's watcher
    my (@pollfd, @watch);
    for my $watch (keys %{$self->{handles}}) {
        my $h = $self->{handles}{$watch};
        next unless @{$h->{io}};
        push @pollfd, $h->{fd}, 0;      # POLLNVAL comes whatever is asked
        push @watch, $watch;
    }
    if (!@watch) {
        $self->{sweep} = undef;
        return;
    }
    return if IO::Poll::_poll(0, @pollfd) <= 0;
    for my $i (0 .. $#watch) {
        next unless $pollfd[2 * $i + 1] & POLLNVAL;
        # an earlier callback may have removed or changed it
        my $h = $self->{handles}{$watch[$i]} or next;
        next unless @{$h->{io}} && $h->{fd} == $pollfd[2 * $i];
        $self->_closed($watch[$i], $h);
    }
    return;
}

# ---- timers --------------------------------------------------------------

# Listed only once armed, and in a child only once the loop knows, as
# add_handle does.
sub add_timeout {
    my ($self, $ms, $cb, $opaque, $ff) = @_;
    $self->_forked if $self->{forks} != $Sys::Virt::Event::FORKS;
    my $timer = $self->{next_timer}++;
    my $t = { cb => $cb, opaque => $opaque, ff => $ff };
    _arm($self, $timer, $t, $ms);
    $self->{timers}{$timer} = $t;
    return $timer;
}

# On the path of every event libvirt delivers (it flips its event timer
# to 0 and back to -1), hence plain function calls.
sub update_timeout {
    my ($self, $timer, $ms) = @_;
    my $t = $self->{timers}{$timer} or return;    # or inherited: see _forked
    _arm($self, $timer, $t, $ms);
    _check_drained($self) if $self->{draining};
    return;
}

sub remove_timeout {
    my ($self, $timer) = @_;
    $self->_forked if $self->{forks} != $Sys::Virt::Event::FORKS;
    my $table = exists $self->{timers}{$timer} ? $self->{timers} : $self->{old_timers};
    my $t = $table->{$timer} or return -1;
    $self->_defer_free($t);
    delete $table->{$timer};
    delete $self->{zero}{$timer};
    return 0;
}

# As libvirt's own loops do, any update restarts the interval from now.
# Interval 0 fires once per loop iteration, after the iteration's poll for
# I/O: one watcher on a descriptor that is always ready (the write end of
# a private, empty pipe) fires all such timers.  A timer due at once would
# not do: the pure-Perl backend handles due timers before, and instead of,
# polling for I/O.  libvirt flips its event timer between 0 and -1 for
# every event it delivers, so the watcher outlives the last such timer
# by one iteration instead of being made again each time.
#
# What can die (making a watcher, the pipe) comes first, and the old
# watcher goes only once the new one exists: a failed update leaves the
# timer as it was.
sub _arm {
    my ($self, $timer, $t, $ms) = @_;
    if ($ms == 0) {
        if (!$self->{zero_w}) {
            _backend() unless $BACKEND;
            Scalar::Util::weaken(my $weak = $self);
            $self->{zero_w} = AnyEvent->io(fh => $self->_ready_fh, poll => 'w',
                                           cb => sub { $weak->_run_zero_timers if $weak });
        }
        $self->{zero}{$timer} = 1;
        delete $t->{w};
        return;
    }
    if ($ms < 0) {
        delete $t->{w};
        delete $self->{zero}{$timer};
        return;
    }
    _backend() unless $BACKEND;
    my $seconds = $ms / 1000;
    Scalar::Util::weaken(my $weak = $self);
    $t->{w} = AnyEvent->timer(after => $seconds, interval => $seconds,
                              cb => sub { $weak->_dispatch_timer($timer) if $weak });
    delete $self->{zero}{$timer};
    return;
}

sub _ready_fh {
    my ($self) = @_;
    if (!$self->{ready}) {
        pipe(my $r, my $w) or Carp::croak("Sys::Virt::Event::AnyEvent: pipe: $!");
        $self->{ready} = [$r, $w];
    }
    return $self->{ready}[1];
}

sub _dispatch_timer {
    my ($self, $timer) = @_;
    return $self->_forked if $self->{forks} != $Sys::Virt::Event::FORKS;  # the parent's watcher
    my $t = $self->{timers}{$timer} or return;     # removed meanwhile
    $self->_run_timeout_callback($timer, $t->{cb}, $t->{opaque});
    return;
}

sub _run_zero_timers {
    my ($self) = @_;
    return $self->_forked if $self->{forks} != $Sys::Virt::Event::FORKS;  # the parent's watcher
    my $zero = $self->{zero};
    if (!%$zero) {
        $self->{zero_w} = undef;    # nothing at 0 since the last iteration
        return;
    }
    for my $timer (keys %$zero) {
        # an earlier callback of this iteration may have changed it
        my $t = $zero->{$timer} && $self->{timers}{$timer} or next;
        $self->_run_timeout_callback($timer, $t->{cb}, $t->{opaque});
    }
    return;
}

# ---- fork and backends ----------------------------------------------------

# A child process inherits the loop with the parent's watches and timers,
# and their AnyEvent watchers, which stay armed in the child.  Dispatching
# them there would run libvirt's callbacks on a copy of the parent's
# connections: the child would read replies and events from the parent's
# socket, or write keepalives to it, and the parent would lose them.  So
# the loop notes the process it runs in, and the first time it finds
# itself in another one (a watcher of its fires, libvirt adds or removes
# something or changes a watch's watchers, drain is called) it drops every watcher it inherited, once, before
# dispatching anything, and moves the inherited entries aside
# (old_handles, old_timers), where dispatches and libvirt's updates do not
# find them.  They stay there, since libvirt in the child still holds them
# and may remove them; what the child adds afterwards is its own and works
# as usual.
#
# Knowing the process costs a comparison per dispatch, with the count of
# forks that Sys::Virt::Event keeps ($$ would be a getpid() each time).
# EV could tell (a fork watcher), but
# only when it hooks fork() itself, and EV as packaged here does not: its
# loop in the child keeps using the parent's epoll instance, where
# stopping a watcher removes the descriptor from the parent's set too, for
# good.  So, on EV, the child's loop is given its own kernel state first
# (loop_fork, which takes effect before EV next touches the kernel); once
# more is harmless where EV has done it already.
sub _forked {
    my ($self) = @_;
    return if $self->{forks} == $Sys::Virt::Event::FORKS;
    EV::default_loop()->loop_fork if ($BACKEND // '') eq 'AnyEvent::Impl::EV';
    $self->{forks} = $Sys::Virt::Event::FORKS;
    for my $kind (qw(handles timers)) {
        my $old = $self->{"old_$kind"};
        while (my ($id, $entry) = each %{$self->{$kind}}) {
            delete @$entry{qw(io w)};
            $old->{$id} = $entry;
        }
        $self->{$kind} = {};
    }
    %{$self->{zero}} = ();
    $self->{zero_w} = undef;
    $self->{sweep} = undef;
    delete $self->{ready};      # the parent's pipe: this process's copies go
    $self->_check_drained if $self->{draining};
    return;
}

# Learns what the backend needs, before the first watcher is made.
sub _backend {
    $BACKEND = AnyEvent::detect();
    $SWEEP = $BACKEND eq 'AnyEvent::Impl::Perl';
    return;
}

# ---- frees ---------------------------------------------------------------

# The free of a removed watch or timer runs later, from the loop, on a
# clean stack: never inside remove_*, which libvirt calls with its locks
# held.  Each entry is queued once and shifted off before it is freed,
# so it is freed once.  The run is scheduled before the free is queued:
# if scheduling dies, nothing is queued, and the entry is still live.
sub _defer_free {
    my ($self, $entry) = @_;
    if (!$self->{free_scheduled}) {
        Scalar::Util::weaken(my $weak = $self);
        AnyEvent::postpone(sub { $weak->_run_frees if $weak });
        $self->{free_scheduled} = 1;
    }
    push @{$self->{pending}}, [$entry->{ff}, $entry->{opaque}];
    return;
}

sub _run_frees {
    my ($self) = @_;
    $self->{free_scheduled} = 0;
    while (my $free = shift @{$self->{pending}}) {
        $self->_free_callback_opaque(@$free);
    }
    $self->_check_drained;
    return;
}

# ---- introspection -------------------------------------------------------

# Inherited entries count: libvirt still holds them.
sub watches {
    my ($self) = @_;
    return _ids($self->{handles}, $self->{old_handles});
}

sub timers {
    my ($self) = @_;
    return _ids($self->{timers}, $self->{old_timers});
}

# The keys of both tables in ascending order; their number in scalar
# context.
sub _ids {
    my ($entries, $old) = @_;
    my @ids = (keys %$entries, keys %$old);
    return wantarray ? sort { $a <=> $b } @ids : scalar @ids;
}

sub is_idle {
    my ($self) = @_;
    return !%{$self->{handles}} && !%{$self->{timers}} && !@{$self->{pending}}
        && !%{$self->{old_handles}} && !%{$self->{old_timers}};
}

sub _drained {
    my ($self) = @_;
    return !@{$self->{pending}} && !%{$self->{zero}};
}

sub _check_drained {
    my ($self) = @_;
    my $cv = $self->{draining} or return;
    $cv->send(1) if $self->_drained;
    return;
}

sub drain {
    my ($self, $seconds) = @_;
    $seconds //= 5;
    if (ref $seconds || $seconds !~ /\A(?:\d+\.?\d*|\.\d+)\z/) {
        Carp::croak("Sys::Virt::Event::AnyEvent::drain: SECONDS must be a "
                    . "non-negative number, not '$seconds'");
    }
    $self->_forked if $self->{forks} != $Sys::Virt::Event::FORKS;
    return 1 if $self->_drained;
    my $cv = AnyEvent->condvar;
    my $timeout = AnyEvent->timer(after => $seconds, cb => sub { $cv->send(0) });
    local $self->{draining} = $cv;
    return $cv->recv ? 1 : 0;
}

# ---- lifetime ------------------------------------------------------------

# Watches and timers still registered stay with libvirt: their handles are
# dropped here and the module frees them once libvirt removes them.  What
# was removed is freed now, unless the interpreter is being torn down.
sub DESTROY {
    my ($self) = @_;
    delete $LIVE{Scalar::Util::refaddr($self)};
    return if ${^GLOBAL_PHASE} eq 'DESTRUCT';
    local ($@, $!, $?);
    $self->_run_frees;
    return;
}

END {
    for my $loop (grep { defined } values %LIVE) {
        $loop->_run_frees;
    }
}

1;

__END__

=head1 NAME

Sys::Virt::Event::AnyEvent - Run libvirt's events through AnyEvent

=head1 SYNOPSIS

  use AnyEvent;
  use Sys::Virt;
  use Sys::Virt::Event::AnyEvent;

  # first, before any connection is opened
  my $loop = Sys::Virt::Event::AnyEvent->register;

  my $conn = Sys::Virt->new(uri => 'qemu:///system');
  $conn->domain_event_register_any(undef,
      Sys::Virt::Domain::EVENT_ID_LIFECYCLE,
      sub { my ($conn, $dom, $event, $detail) = @_; ... });

  # libvirt's events are now delivered whenever the program's AnyEvent
  # loop runs: a condvar's recv, EV::run, AnyEvent::Loop::run, ...
  my $quit = AnyEvent->condvar;
  my $sig = AnyEvent->signal(signal => 'INT', cb => sub { $quit->send });
  $quit->recv;

  # at the end: let libvirt's removals and frees go through
  undef $conn;
  $loop->drain(2);

=head1 DESCRIPTION

libvirt needs an event loop for domain, network and storage events,
keepalive and streams.  This module is one, built on L<AnyEvent>: libvirt's
watches and timers become AnyEvent watchers, so they run in whatever loop
AnyEvent uses (L<EV>, L<Glib>, AnyEvent's own pure-Perl loop, ...) next to
the program's other watchers.  It is a subclass of L<Sys::Virt::Event> and
meets the contract described there.

Register it before opening the first connection.  libvirt accepts one
event loop per process, and it asks the loop for a remote connection's
socket watch when it opens the connection: if there is no loop at that
moment, it disables events and keepalive for that connection for good.
Once registered, the loop needs nothing more: it runs whenever the
program's AnyEvent loop runs.

The loop is reproduced faithfully, as libvirt's own loops behave:

=over 4

=item *

A watch whose mask is not 0 always reports C<HANDLE_ERROR> and
C<HANDLE_HANGUP> when they happen, whether or not its mask asked for
them.  AnyEvent only says that a descriptor is readable or writable, so
the actual conditions are read with a zero-timeout C<poll()> of that one
descriptor before the callback is called.  A dead daemon thus closes the
connection with reason EOF, as with libvirt's default loop.  A watch with
mask 0 is disabled: it has no AnyEvent watcher.  (A watch for both
reading and writing has one AnyEvent watcher for each, and may be called
once for each in an iteration, each time with the conditions of that
moment.)

=item *

A timer of interval -1 is disabled; one of interval 0 fires once on every
loop iteration, after that iteration's I/O has been looked at, so it never
starves I/O; a changed interval counts from the moment of the change, not
from when the old interval would have expired.

=item *

Callbacks may add, update and remove watches and timers, their own
included, while the loop is dispatching: each AnyEvent callback looks its
watch up by id, so a removed one is not called.  Work per event and per
add, update or remove is the same whatever the number of watches.

=item *

The free function of a removed watch or timer runs once, later, from the
loop (through C<AnyEvent::postpone>), never inside C<remove_handle> or
C<remove_timeout>, which libvirt calls with its locks held.

=item *

A change that fails leaves the watch or timer as it was.  When AnyEvent
cannot make a watcher (or anything else dies while the loop changes a
watch or timer), the error is reported as L<Sys::Virt::Event/ERROR
HANDLING> describes, the old watchers stay, and a later change to the
same mask or interval takes effect.  An add that fails leaves nothing
behind: libvirt is told it failed, and the public call croaks.

=item *

Watches and timers inherited across C<fork> stay silent in the child;
see L</FORK>.  A watched descriptor closed behind the loop's back is
reported as C<HANDLE_ERROR> where the backend allows; see L</CLOSED
DESCRIPTORS>.

=back

=head1 METHODS

=head2 Sys::Virt::Event::AnyEvent->register

  my $loop = Sys::Virt::Event::AnyEvent->register;
  my $loop = Sys::Virt::Event::AnyEvent->register(native => 0);

Creates the process's loop object, registers it with libvirt and returns
it.  Called again as a class method, it returns the same object.  Called
on an object (C<< Sys::Virt::Event::AnyEvent->new->register >>), it
registers that object and returns it; the class method then returns that
object too.  Croaks, as L<Sys::Virt::Event/register> does, when another
loop (or libvirt's default loop) is registered already.

When AnyEvent runs on L<EV> and this distribution was built with its
native loop, the class method registers L<Sys::Virt::Event::EV> instead
and returns its object, which has the same C<watches>, C<timers>,
C<is_idle> and C<drain> methods: libvirt's events then run in C on EV's
loop, with no Perl per event, under the same AnyEvent program.
AnyEvent chooses its backend at this call if it has not yet (so load
another event loop module, such as Glib, before it if you want that
one).  To have the loop in Perl anyway, pass C<< native => 0 >>, or
register an object of your own (C<< ->new->register >>).

=head2 Sys::Virt::Event::AnyEvent->new

Creates a loop object, not registered.  Only the registered object is
called by libvirt.

=head2 $loop->watches

The ids of the live watches, in ascending order (disabled ones, of mask 0,
included, and in a child process those inherited from the parent, which
libvirt still holds there: see L</FORK>).  In scalar context, their
number.

=head2 $loop->timers

The ids of the live timers, in ascending order (disabled ones, of
interval -1, included, and in a child those inherited).  In scalar
context, their number.

=head2 $loop->is_idle

True when no watch or timer is live and no free is waiting to run: all
that libvirt added has been removed and freed.

=head2 $loop->drain($seconds)

Runs the AnyEvent loop until the frees that are waiting have run and no
timer of interval 0 is left (libvirt uses one to deliver queued events),
or until C<$seconds> (default 5) have passed.  Returns true when drained,
false on timeout.  It returns at once when there is nothing to wait for.
It waits on an AnyEvent condition variable, so call it where a blocking
wait is allowed: not from inside a callback of the loop.

=head2 add_handle, update_handle, remove_handle, add_timeout, update_timeout, remove_timeout

The implementation methods that libvirt calls, as described in
L<Sys::Virt::Event/register>.  Programs do not call them: they use
C<Sys::Virt::Event::add_handle> and the other public functions, which go
through libvirt to these.

=head1 LIFETIME

Once registered, the object stays registered (libvirt offers no way
back), and the module keeps it for the life of the process.  Watches and
timers that are still registered when the program exits stay with
libvirt, which may still be using what they would free, so they are not
freed; frees that were waiting for the loop run in an C<END> block before
global destruction, so that none is lost however the program ended its
loop.

An object that is not registered is not called by libvirt.  If one is
used anyway, by a registered loop that forwards to it, and goes away, the
frees it was holding run at once; watches still registered are freed by
L<Sys::Virt::Event> once libvirt removes them.

=head1 LIMITATIONS

AnyEvent cannot wait for an error or hangup alone.  A watch whose mask
holds only C<HANDLE_ERROR> or C<HANDLE_HANGUP> (libvirt itself never asks
for one) waits for readability, and when the descriptor is readable
without an error or hangup the watch is suspended until its mask is next
set, rather than waking the loop in a busy loop.

=head1 FORK

libvirt's connections are not fork-safe: a child process must leave the
parent's alone, or it reads replies and events meant for the parent from
the parent's socket.  So the watches and timers a child inherits stay
silent in the child.  The loop notes the process it runs in; as soon as
it finds itself in a child (the first time one of its inherited watchers
fires, libvirt adds or removes a watch or timer there or changes a
watch's mask, or C<drain> is called), it drops the AnyEvent watchers it
inherited, before dispatching anything, and never dispatches them in
that process.  Neither is the loop woken for them again: it does not
spin.  libvirt's changes to inherited watches and timers are ignored in
the child; removing them works, and their frees run there, on the
child's copies.  What the child adds itself works as usual, and the
parent loses nothing.

On L<EV>, the loop also calls C<< EV::default_loop->loop_fork >> in the
child, before anything else.  EV as packaged for Debian 12 does not do it
by itself (it is built without its C<pthread_atfork> hook): the child's
loop would otherwise keep using the parent's epoll set, where stopping a
watcher in the child stops it for the parent too.  Calling it once more
is harmless where EV has already done so.

Knowing the process costs a comparison with
L<$Sys::Virt::Event::FORKS|Sys::Virt::Event/$Sys::Virt::Event::FORKS> per
dispatch (and per add, remove, and change of a watch's mask).

=head1 CLOSED DESCRIPTORS

Remove a watch before closing its descriptor, as libvirt does.  When a
program closes a watched descriptor while its watch is live (say with
C<POSIX::close> on the number behind a filehandle), what happens depends
on the loop.  Measured on Linux with libvirt 9.0, EV 4.33 and AnyEvent
7.17, for a watch of mask C<HANDLE_READABLE> on a pipe:

=over 4

=item AnyEvent on EV, with its epoll backend (EV's choice on Linux)

epoll forgets a descriptor when it is closed, so EV never wakes for it:
the watch is never called, and the loop sleeps; the program's other
watchers are not disturbed.  The loop cannot report it, since nothing
tells it.

=item AnyEvent on EV, with its poll or select backend

EV notices (C<poll()> reports C<POLLNVAL>, C<select()> fails with
C<EBADF>), stops the watcher and wakes it once.  The watch is called
once, with C<HANDLE_ERROR>, and not again until its mask is next
changed.  The loop does not spin.

=item AnyEvent's pure-Perl backend

It waits with C<select()>, which then fails at once, every time, for all
descriptors: left alone, the loop spins at full CPU, no I/O watcher of
the program fires any more (timers still do), and the watch is never
called.  So, on this backend, the loop checks the descriptors of its
watches once a second: within a second of the close, the watch is called
once with C<HANDLE_ERROR>, its watcher is dropped, and C<select()> works
again.  Until then the loop spins.  (A closed descriptor under another
AnyEvent watcher of the program still stops this backend.)

=item libvirt's default loop (for comparison)

The watch is never called, and every C<run_default> returns at once:
a loop calling it spins at full CPU.  Other watches and timers are still
served.

=back

A watch that is called with C<HANDLE_ERROR> should be removed.

=head1 THREADS

Like L<Sys::Virt::Event>, the loop belongs to the interpreter that
registered it, and AnyEvent's watchers to that interpreter too.  Mind
the backend: L<EV> does not support ithreads, and creating a thread
while any EV watcher exists (this module's or another's) breaks those
watchers in the creating thread.  AnyEvent's pure-Perl backend has no
such problem.

=head1 SEE ALSO

L<Sys::Virt::Event>, L<AnyEvent>, L<EV>, L<Sys::Virt>

=head1 AUTHOR

The Sys-Virt-Event developers.

=head1 COPYRIGHT AND LICENSE

This library is free software; you can redistribute it and/or modify it
under the same terms as Perl itself: either the GNU General Public License
as published by the Free Software Foundation (version 1 or, at your
option, any later version), or the Artistic License.

=cut

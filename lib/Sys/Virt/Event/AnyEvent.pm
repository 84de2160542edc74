package Sys::Virt::Event::AnyEvent;

use 5.014;
use strict;
use warnings;

use Carp ();
use Scalar::Util ();
use AnyEvent ();
use IO::Poll qw(POLLIN POLLOUT POLLERR POLLHUP POLLNVAL);
use Sys::Virt::Event qw(:constants);

our $VERSION = '0.01';

our @ISA = ('Sys::Virt::Event');

# The object registered through this class's register().
my $REGISTERED;

# Every object of the class, weakly held, so that the frees still queued
# at program exit run in END, before global destruction.
my %LIVE;

my $READ_WRITE = HANDLE_READABLE | HANDLE_WRITABLE;
my $ALWAYS = HANDLE_ERROR | HANDLE_HANGUP;

sub new {
    my ($class) = @_;
    my $self = bless {
        handles    => {},   # watch id => entry; entry->{io}: the watchers
        timers     => {},   # timer id => entry; entry->{w}: the watcher
        zero       => {},   # timer id => 1 for timers of interval 0
        zero_w     => undef, # the watcher that fires them, see _arm
        pending    => [],   # [ff, opaque] of removed entries, to free
        next_watch => 1,
        next_timer => 1,
    }, $class;
    Scalar::Util::weaken($LIVE{Scalar::Util::refaddr($self)} = $self);
    return $self;
}

sub register {
    my ($self) = @_;
    if (!ref $self) {
        return $REGISTERED if $REGISTERED && $REGISTERED->isa($self);
        $self = $self->new;
    }
    $self->SUPER::register;
    $REGISTERED //= $self;
    return $self;
}

# ---- watches -------------------------------------------------------------

sub add_handle {
    my ($self, $fd, $events, $cb, $opaque, $ff) = @_;
    my $watch = $self->{next_watch}++;
    $self->{handles}{$watch} = {
        fd => $fd, cb => $cb, opaque => $opaque, ff => $ff,
        want => '', io => [],
    };
    $self->_watch($watch, $events);
    return $watch;
}

sub update_handle {
    my ($self, $watch, $events) = @_;
    $self->_watch($watch, $events) if $self->{handles}{$watch};
    return;
}

sub remove_handle {
    my ($self, $watch) = @_;
    my $h = delete $self->{handles}{$watch} or return -1;
    $self->_defer_free($h);
    return 0;
}

# (Re)creates the watchers of a watch when a new mask needs others: "r"
# for HANDLE_READABLE, "w" for HANDLE_WRITABLE, none for 0.  A mask of
# only HANDLE_ERROR or HANDLE_HANGUP waits for readability, the closest
# AnyEvent has (see _dispatch_watch).
sub _watch {
    my ($self, $watch, $events) = @_;
    my $h = $self->{handles}{$watch};
    my $want = (($events & HANDLE_READABLE) || ($events && !($events & $READ_WRITE)) ? 'r' : '')
        . (($events & HANDLE_WRITABLE) ? 'w' : '');
    $h->{events} = $events;
    $h->{poll} = (($events & HANDLE_READABLE) ? POLLIN : 0)
        | (($events & HANDLE_WRITABLE) ? POLLOUT : 0);
    return if $want eq $h->{want} && !$h->{suspended};

    $h->{want} = $want;
    $h->{suspended} = 0;
    $h->{io} = [];              # the old watchers go first
    Scalar::Util::weaken(my $weak = $self);
    my $cb = sub { $weak->_dispatch_watch($watch) if $weak };
    for my $poll (split //, $want) {
        push @{$h->{io}}, AnyEvent->io(fh => $h->{fd}, poll => $poll, cb => $cb);
    }
    return;
}

# AnyEvent says only "readable" or "writable", and a backend may wake us
# for a condition an earlier callback has since consumed.  A zero-timeout
# poll() of this one descriptor gives the conditions as they are now,
# including POLLERR and POLLHUP, which poll() reports whatever was asked:
# the events libvirt's own loops would report.
sub _dispatch_watch {
    my ($self, $watch) = @_;
    my $h = $self->{handles}{$watch} or return;    # removed meanwhile
    my @pollfd = ($h->{fd}, $h->{poll});
    # _poll() writes each descriptor's revents over its mask, unless it
    # fails (interrupted: the watcher fires again)
    my $ready = IO::Poll::_poll(0, @pollfd);
    return if $ready < 0;
    my $revents = $ready ? $pollfd[1] : 0;
    my $events = 0;
    $events |= HANDLE_READABLE if $revents & POLLIN;
    $events |= HANDLE_WRITABLE if $revents & POLLOUT;
    $events |= HANDLE_ERROR if $revents & (POLLERR | POLLNVAL);
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

# ---- timers --------------------------------------------------------------

sub add_timeout {
    my ($self, $ms, $cb, $opaque, $ff) = @_;
    my $timer = $self->{next_timer}++;
    my $t = $self->{timers}{$timer} = { cb => $cb, opaque => $opaque, ff => $ff };
    _arm($self, $timer, $t, $ms);
    return $timer;
}

# On the path of every event libvirt delivers (it flips its event timer
# to 0 and back to -1), hence plain function calls.
sub update_timeout {
    my ($self, $timer, $ms) = @_;
    my $t = $self->{timers}{$timer} or return;
    _arm($self, $timer, $t, $ms);
    _check_drained($self) if $self->{draining};
    return;
}

sub remove_timeout {
    my ($self, $timer) = @_;
    my $t = delete $self->{timers}{$timer} or return -1;
    delete $self->{zero}{$timer};
    $self->_defer_free($t);
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
sub _arm {
    my ($self, $timer, $t, $ms) = @_;
    $t->{interval} = $ms;
    delete $t->{w};
    if ($ms == 0) {
        $self->{zero}{$timer} = 1;
        if (!$self->{zero_w}) {
            Scalar::Util::weaken(my $weak = $self);
            $self->{zero_w} = AnyEvent->io(fh => $self->_ready_fh, poll => 'w',
                                           cb => sub { $weak->_run_zero_timers if $weak });
        }
        return;
    }
    delete $self->{zero}{$timer};
    return if $ms < 0;
    my $seconds = $ms / 1000;
    Scalar::Util::weaken(my $weak = $self);
    $t->{w} = AnyEvent->timer(after => $seconds, interval => $seconds,
                              cb => sub { $weak->_dispatch_timer($timer) if $weak });
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
    my $t = $self->{timers}{$timer} or return;     # removed meanwhile
    $self->_run_timeout_callback($timer, $t->{cb}, $t->{opaque});
    return;
}

sub _run_zero_timers {
    my ($self) = @_;
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

# ---- frees ---------------------------------------------------------------

# The free of a removed watch or timer runs later, from the loop, on a
# clean stack: never inside remove_*, which libvirt calls with its locks
# held.  Each entry is queued once and shifted off before it is freed,
# so it is freed once.
sub _defer_free {
    my ($self, $entry) = @_;
    push @{$self->{pending}}, [$entry->{ff}, $entry->{opaque}];
    return if $self->{free_scheduled};
    $self->{free_scheduled} = 1;
    Scalar::Util::weaken(my $weak = $self);
    AnyEvent::postpone(sub { $weak->_run_frees if $weak });
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

sub watches {
    my ($self) = @_;
    return _ids($self->{handles});
}

sub timers {
    my ($self) = @_;
    return _ids($self->{timers});
}

# The keys in ascending order; their number in scalar context.
sub _ids {
    my ($entries) = @_;
    return wantarray ? sort { $a <=> $b } keys %$entries : scalar keys %$entries;
}

sub is_idle {
    my ($self) = @_;
    return !%{$self->{handles}} && !%{$self->{timers}} && !@{$self->{pending}};
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

=back

=head1 METHODS

=head2 Sys::Virt::Event::AnyEvent->register

  my $loop = Sys::Virt::Event::AnyEvent->register;

Creates the process's loop object, registers it with libvirt and returns
it.  Called again as a class method, it returns the same object.  Called
on an object (C<< Sys::Virt::Event::AnyEvent->new->register >>), it
registers that object and returns it; the class method then returns that
object too.  Croaks, as L<Sys::Virt::Event/register> does, when another
loop (or libvirt's default loop) is registered already.

=head2 Sys::Virt::Event::AnyEvent->new

Creates a loop object, not registered.  Only the registered object is
called by libvirt.

=head2 $loop->watches

The ids of the live watches, in ascending order (disabled ones, of mask 0,
included).  In scalar context, their number.

=head2 $loop->timers

The ids of the live timers, in ascending order (disabled ones, of
interval -1, included).  In scalar context, their number.

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

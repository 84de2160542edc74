package Sys::Virt::Event::EV;

use 5.018;
use strict;
use warnings;

use Carp ();
use EV ();
use Sys::Virt::Event ();

our $VERSION = '0.02';

# The process's loop object, once registered.
my $REGISTERED;

sub register {
    my ($class) = @_;
    return $REGISTERED if $REGISTERED;
    my $self = bless {}, ref $class || $class;
    _register($self);
    return $REGISTERED = $self;
}

sub watches {
    my @ids = sort { $a <=> $b } _ids(0);
    return wantarray ? @ids : scalar @ids;
}

sub timers {
    my @ids = sort { $a <=> $b } _ids(1);
    return wantarray ? @ids : scalar @ids;
}

sub is_idle {
    my @w = _ids(0);
    my @t = _ids(1);
    return !@w && !@t && !_pending_frees();
}

sub _drained { return !_pending_frees() && !_zero_timers() }

sub drain {
    my ($self, $seconds) = @_;
    $seconds //= 5;
    if (ref $seconds || $seconds !~ /\A(?:\d+\.?\d*|\.\d+)\z/) {
        Carp::croak("Sys::Virt::Event::EV::drain: SECONDS must be a "
                    . "non-negative number, not '$seconds'");
    }
    # Frees due run here (this is the program's level); what libvirt
    # delivers through a timer of interval 0 needs the loop to turn.
    _run_frees();
    return 1 if _drained();
    my $timed_out;
    my $timer = EV::timer($seconds, 0, sub { $timed_out = 1 });
    until ($timed_out) {
        EV::run(EV::RUN_ONCE());
        _run_frees();
        last if _drained();
    }
    return _drained() ? 1 : 0;
}

# Frees still waiting for the loop when the program ends run before
# global destruction, whatever became of the loop.
END {
    _run_frees() if $REGISTERED;
}

1;

__END__

=head1 NAME

Sys::Virt::Event::EV - libvirt's event loop in C on libev, run by EV

=head1 SYNOPSIS

  use EV;
  use Sys::Virt;
  use Sys::Virt::Event::EV;

  Sys::Virt::Event::EV->register;     # before opening connections
  my $conn = Sys::Virt->new(uri => 'qemu:///system');
  $conn->domain_event_register_any(undef,
      Sys::Virt::Domain::EVENT_ID_LIFECYCLE,
      sub { my ($conn, $dom, $event, $detail) = @_; ... });
  EV::run;                            # or anything that runs EV's loop

=head1 DESCRIPTION

This gives libvirt an event loop written in C directly on libev, the
library under L<EV>: libvirt's watches and timers become libev watchers
on EV's default loop, so they run whenever that loop runs: under
C<EV::run>, an L<AnyEvent> condition variable on the EV backend,
L<Mojo::IOLoop> with L<Mojo::Reactor::EV>, or L<IO::Async::Loop::EV>
(see F<examples/> in the distribution for each).  No Perl code runs per
event but the program's own callbacks, which makes it the fastest loop
this distribution offers.

It keeps every rule of L<Sys::Virt::Event>: a C<die> in a callback
given to Sys::Virt or to C<Sys::Virt::Event::add_handle> is reported
through C<$Sys::Virt::Event::DIED> and never unwinds libvirt; libvirt's
free functions run exactly once, after removal, at the start of the
next loop iteration, never inside libvirt's own calls; Perl's signal
handlers and C<exit> wait until libvirt has returned (L<Sys::Virt::Event/SIGNALS AND EXIT>),
and a handler whose signal interrupts the loop's wait runs then, not
when the loop next returns to Perl; a call from a thread other than the
registering one is refused with a one-time warning; a forked child
leaves the parent's watches alone (L</FORK>).

L<Sys::Virt::Event::AnyEvent/register> uses this loop by itself when
AnyEvent runs on EV.

This module is built only when EV and its C headers are installed at
configure time (Debian: libev-perl); C<perl Makefile.PL> says so when
it leaves it out.

=head1 METHODS

=head2 Sys::Virt::Event::EV->register

Registers the loop with libvirt, loading L<EV>, and returns the loop
object; called again, it returns the same object.  Call it before
opening connections.  libvirt takes one loop per process: this croaks
when another loop (a Perl one, or libvirt's default loop) is registered
already, and registering another croaks once this one is.

=head2 $loop->watches

The ids of libvirt's live watches, in ascending order (disabled ones, of
mask 0, included, and in a forked child those inherited from the
parent).  In scalar context, their number.

=head2 $loop->timers

The ids of libvirt's live timers, in ascending order (disabled ones, of
interval -1, included).  In scalar context, their number.

=head2 $loop->is_idle

True when no watch or timer is live and no free is waiting to run.

=head2 $loop->drain($seconds)

Runs EV's loop until the frees that are waiting have run and no timer of
interval 0 is left (libvirt uses one to deliver queued events), or until
C<$seconds> (default 5) have passed.  Returns true when drained, false
on timeout.  Not to be called from inside a callback of the loop.

=head1 HOW IT WAITS

A watch with a mask of C<HANDLE_READABLE> or C<HANDLE_WRITABLE> is an
C<ev_io> watcher.  When libev finds its descriptor ready, a zero-timeout
C<poll()> of that descriptor tells what it really is, so that
C<HANDLE_ERROR> and C<HANDLE_HANGUP> are reported as libvirt's own loop
reports them.  A mask of 0 stops the watcher.  A mask of only
C<HANDLE_ERROR> or C<HANDLE_HANGUP> (libvirt itself never asks for one)
waits for readability; readable without an error or hangup, the watch
sleeps until its mask is next set.

A timer is an C<ev_timer>.  An interval of -1 stops it; a positive one
starts it anew from the moment it is set, as libvirt's loop does; an
interval of 0 fires once in every loop iteration, without keeping the
loop from waiting for descriptors.

A watcher of the loop's own (an C<ev_prepare>) runs at the start of each
iteration, to run the frees that are due and the signal handlers that
interrupted the wait.  It does not keep C<EV::run> from returning; while
frees are waiting, the loop runs one more iteration for them.  Frees
still waiting when the program ends run in an C<END> block.

=head1 FORK

libvirt's connections are not fork-safe.  In a forked child, EV's loop
is told it was forked (libev's C<ev_loop_fork>, which keeps the child
off the parent's epoll set) and the watches and timers inherited from
the parent are stopped there, before the child's loop first waits: the
child never reads the parent's sockets, and the parent loses nothing.
Watches the child's own connections add are served as usual.

=head1 CLOSED DESCRIPTORS

A descriptor closed while watched is reported as C<HANDLE_ERROR> when
libev notices it: at once with EV's poll or select backend, when the
watch is next changed with its epoll backend (epoll forgets a closed
descriptor and never wakes for it).

=head1 THREADS

The loop belongs to the interpreter that registered it, and runs in its
thread: libvirt calls made from another thread are refused (libvirt gets
-1, and a warning is printed once).

=head1 SEE ALSO

L<Sys::Virt::Event>, L<Sys::Virt::Event::AnyEvent>, L<EV>, L<Sys::Virt>

=head1 AUTHOR

Sys-Virt-Event developers.

=head1 COPYRIGHT AND LICENSE

This library is free software; you can redistribute it and/or modify it
under the same terms as Perl itself.

=cut

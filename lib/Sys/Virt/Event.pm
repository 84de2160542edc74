package Sys::Virt::Event;

# The system's Sys::Virt (Virt.so) defines XSUBs and constants in this
# package too.  Load it first when it is installed, then empty what it put
# here, so that our own XSLoader::load below defines this package's subs
# afresh and silently, whichever module the program loaded first.  The
# globs stay: code compiled before this module was loaded calls through
# them, and must reach our subs too.
BEGIN {
    if (!$INC{'Sys/Virt.pm'}) {
        local $@;
        eval { require Sys::Virt };
    }
    for my $name (keys %Sys::Virt::Event::) {
        next if $name =~ /::\z/;
        my $entry = $Sys::Virt::Event::{$name};
        if (ref \$entry ne 'GLOB') {
            delete $Sys::Virt::Event::{$name};  # a constant, not yet a glob
        } elsif (defined *{$entry}{CODE}) {
            no strict 'refs';
            no warnings;
            undef &{"Sys::Virt::Event::$name"};
        }
    }
}

use 5.018;
use strict;
use warnings;

use Carp ();
use Scalar::Util ();
use Exporter 'import';

our $VERSION = '0.02';

our @CONSTANTS = qw(HANDLE_READABLE HANDLE_WRITABLE HANDLE_ERROR HANDLE_HANGUP);
our @EXPORT_OK = @CONSTANTS;
our %EXPORT_TAGS = (constants => [@CONSTANTS]);

# Called with ($error, $where) when an implementation method or a callback
# dies below a libvirt C frame; see ERROR HANDLING.
our $DIED;

# Whether the callbacks given to Sys::Virt are protected; see ERROR HANDLING.
our $PROTECT_CALLBACKS = 1;

require XSLoader;
XSLoader::load('Sys::Virt::Event', $VERSION);

# Sys::Virt calls the callbacks registered through these methods from
# libvirt's dispatch without an eval: a die would unwind libvirt's frames
# and drop the rest of its batch.  Each method is wrapped once, to hand
# Sys::Virt a protected callback (see _protect_callback in Event.xs) in
# place of the program's coderef: method => [argument index, what it is].
my %CALLBACK_OF = (
    'Sys::Virt::domain_event_register'           => [1, 'domain event callback'],
    'Sys::Virt::domain_event_register_any'       => [3, 'domain event callback'],
    'Sys::Virt::network_event_register_any'      => [3, 'network event callback'],
    'Sys::Virt::storage_pool_event_register_any' => [3, 'storage pool event callback'],
    'Sys::Virt::node_device_event_register_any'  => [3, 'node device event callback'],
    'Sys::Virt::secret_event_register_any'       => [3, 'secret event callback'],
    'Sys::Virt::register_close_callback'         => [1, 'close callback'],
    'Sys::Virt::Stream::add_callback'            => [2, 'stream callback'],
);
for my $method (sort keys %CALLBACK_OF) {
    no strict 'refs';
    next unless defined &$method;
    my ($index, $what) = @{ $CALLBACK_OF{$method} };
    my $where = "Sys::Virt $what";
    my $original = \&$method;
    my $wrapper = sub {
        if ($PROTECT_CALLBACKS && @_ > $index) {
            my $callback = $_[$index];      # read once: it may be tied
            if ((Scalar::Util::reftype($callback) // '') eq 'CODE') {
                # splice: replacing $_[$index] would assign to the caller's
                # variable, which @_ aliases
                splice @_, $index, 1, _protect_callback($callback, $where);
            }
        }
        # Sys::Virt takes a reference to the object and the callback
        # before asking libvirt, and keeps it for ever when libvirt
        # refuses (an event type the driver lacks): the connection would
        # never close.  What it took then is given back.
        my @kept = map { $_ < @_ ? _reference_count($_[$_]) : () } 0, $index;
        # A call, not goto: an @_ changed by splice and handed on by goto
        # lives until the caller's scope ends, and with it the program's
        # callback, long after Sys::Virt has dropped it.
        my @result;
        my $wantarray = wantarray;
        my $ok = eval {
            if ($wantarray) { @result = $original->(@_) }
            else { $result[0] = $original->(@_) }
            1;
        };
        if (!$ok) {
            my $err = $@;
            _drop_kept_references($_[0], $kept[0]) if @kept;
            _drop_kept_references($_[$index], $kept[1]) if @kept > 1;
            # Sys::Virt's own errors are objects; perl's (a usage message)
            # name the caller's line, as they would without the wrapper
            if (!ref $err) {
                my (undef, $file, $line) = caller;
                $err =~ s/ at \Q${\ __FILE__}\E line \d+\.\n\z/ at $file line $line.\n/;
            }
            die $err;
        }
        return $wantarray ? @result : $result[0];
    };
    Scalar::Util::set_prototype(\&$wrapper, prototype $original);
    no warnings 'redefine';
    *$method = $wrapper;
}

# The methods libvirt's hooks call on a registered implementation.
my @IMPL_METHODS = qw(add_handle update_handle remove_handle
                      add_timeout update_timeout remove_timeout);

sub register {
    my ($impl) = @_;

    if (!Scalar::Util::blessed($impl) || !$impl->isa('Sys::Virt::Event')) {
        Carp::croak('Sys::Virt::Event::register: the implementation must be an '
                    . 'object of a subclass of Sys::Virt::Event or Sys::Virt::EventImpl');
    }
    # A subclass that lacks one would otherwise fail at libvirt's first
    # call, far from the cause: our own public functions of the same names
    # and Sys::Virt::EventImpl's abstract stubs do not count.
    my @missing = grep {
        my $code = $impl->can($_);
        !$code
            || $code == \&{"Sys::Virt::Event::$_"}
            || $code == \&{"Sys::Virt::EventImpl::$_"}
    } @IMPL_METHODS;
    if (@missing) {
        Carp::croak('Sys::Virt::Event::register: ' . ref($impl)
                    . ' does not implement ' . join(', ', @missing));
    }
    # the XSUB's own croaks would point here, not at the caller
    if (!eval { _register_impl($impl); 1 }) {
        (my $error = $@) =~ s/ at \S+ line \d+\.\n\z//;
        Carp::croak($error);
    }
    return;
}

# Called from C with (error, where, died) when something below a libvirt
# frame failed; see ERROR HANDLING.
sub _report_error {
    my ($error, $where, $died) = @_;

    if ((Scalar::Util::reftype($DIED) // '') eq 'CODE') {
        $DIED->($error, $where);
        return;
    }
    $error = "$error";
    $error =~ s/\n*\z/\n/;
    warn 'Sys::Virt::Event: ', $where, ($died ? ' died' : ''), ": $error";
    return;
}

# Frees queued while libvirt was below us run once the program is back at
# its top level; this catches the last ones.
END { _run_pending_frees() }

# Sys::Virt::EventImpl subclasses inherit the helpers and register().
require Sys::Virt::EventImpl;

1;

__END__

=head1 NAME

Sys::Virt::Event - An event loop contract between libvirt and Perl

=head1 SYNOPSIS

  # libvirt's own loop
  use Sys::Virt;
  use Sys::Virt::Event;

  Sys::Virt::Event::register_default();
  my $conn = Sys::Virt->new(uri => 'test:///default');
  $conn->domain_event_register_any(undef,
      Sys::Virt::Domain::EVENT_ID_LIFECYCLE,
      sub { my ($conn, $dom, $event, $detail) = @_; ... });
  Sys::Virt::Event::run_default() while 1;

  # or your own loop
  package My::Loop;
  use parent 'Sys::Virt::Event';

  sub add_handle {
      my ($self, $fd, $events, $cb, $opaque, $ff) = @_;
      my $watch = ++$self->{next};
      $self->{handles}{$watch} = [$fd, $events, $cb, $opaque, $ff];
      return $watch;
  }
  # ... update_handle, remove_handle, add_timeout, update_timeout,
  #     remove_timeout; when $fd is ready:
  #     $self->_run_handle_callback($watch, $fd, $revents, $cb, $opaque);
  # and after remove_handle, at any time:
  #     $self->_free_callback_opaque($ff, $opaque);

  package main;
  My::Loop->new->register;

=head1 DESCRIPTION

The C<Sys::Virt::Event> module represents the contract for integrating
libvirt with an event loop.  libvirt needs an event loop for domain,
network and storage events, keepalive and streams: either its own default
loop (L</register_default>, L</run_default>), or one written in Perl, by
subclassing this package and registering an object of the subclass
(L</register>), or the loop in C on L<EV>'s default loop that this
distribution builds when EV is installed (L<Sys::Virt::Event::EV>, which
L<Sys::Virt::Event::AnyEvent> registers by itself on AnyEvent's EV
backend).  One of them per process: libvirt takes one registration.

The glue is written in C and is careful about the boundary: a Perl
exception never unwinds through libvirt's C code, a value that did not
come from this module is refused rather than trusted, and libvirt's free
functions run exactly once, never inside a libvirt call.  The rules an
implementation can rely on are listed under L</WRITING AN IMPLEMENTATION>.

Load this module before opening connections; it may be loaded before or
after L<Sys::Virt> (which defines an older version of some of these
functions: this module's are the ones in effect either way).

=head1 METHODS

=head2 register_default()

Register libvirt's default event loop implementation.  Calling it again
is a no-op; calling it after L</register> croaks, since libvirt accepts
one event loop per process.

=head2 run_default()

Run a single iteration of the default event loop implementation: wait
until a watch is ready or a timer is due, and dispatch it.  Croaks when
the default loop is not the registered one (it would otherwise block for
ever), when libvirt reports an error, and in a process forked after the
loop was registered (see L</FORK>).  Signal handlers and C<exit> called
by its callbacks take effect once it returns (see L</SIGNALS AND EXIT>).

libvirt's default loop frees removed watches and timers from an
idle-priority source, which runs only in an iteration where nothing else
is due.  While any timer of interval 0 is active, every iteration has
something due, so nothing removed in the meantime is freed: a program
that adds and removes watches while it keeps a 0 ms timer grows without
bound.  Give such a timer an interval of 1 ms or more, or set it to 0
only for the iteration that needs it (as libvirt does with its own), or
use a loop written in Perl (L<Sys::Virt::Event::AnyEvent>), whose frees
do not wait for an idle iteration.

=head2 register($impl)

Register an event loop implementation. The implementation must be an
instance of a sub-class of the C<Sys::Virt::Event> package (or of
L<Sys::Virt::EventImpl>) that implements the six methods below.  It can
be called as a function or as C<< $impl->register >>.  Registering the
same object again is a no-op; registering another one, or any after
L</register_default>, croaks, since libvirt silently ignores a second
registration.  Register before opening the first connection: libvirt sets
up a connection's keepalive and event timers when it is opened.

The methods libvirt calls on C<$impl>:

=over 4

=item $impl->add_handle($fd, $events, $cb, $opaque, $ff)

Watch file descriptor C<$fd> for C<$events> (a mask of the L</CONSTANTS>)
and return a positive watch number, unique among live watches.  Anything
else (undef, 0, a negative number, a string, or dying) tells libvirt the
add failed.  Keep C<$cb>, C<$opaque> and C<$ff> for the helpers below.

=item $impl->update_handle($watch, $events)

Change the mask of C<$watch>.  A mask of 0 disables the watch.

=item $impl->remove_handle($watch)

Stop watching.  Return 0, or -1 for failure.  The data behind the watch is
freed by C<_free_callback_opaque>, here or later.

=item $impl->add_timeout($frequency, $cb, $opaque, $ff)

Create a timer firing every C<$frequency> milliseconds (-1: disabled,
0: on every loop iteration) and return a positive timer number.

=item $impl->update_timeout($timer, $frequency)

Change the interval of C<$timer>, with the same meaning of -1 and 0.

=item $impl->remove_timeout($timer)

Delete the timer.  Return 0, or -1 for failure.

=back

=head2 $self->_run_handle_callback($watch, $fd, $events, $cb, $opaque)

A helper method for executing a callback in response to one of more
C<$events> on the file handle C<$fd>. The C<$watch> number is the unique
identifier associated with the file descriptor. The C<$cb> and C<$opaque>
parameters are the callback and data registered for the handle.

A watch that libvirt removed already (perhaps earlier in the same loop
iteration) is skipped silently.  Croaks when C<$cb> or C<$opaque> are not
the values given to C<add_handle> for this C<$watch> and C<$fd>.

=head2 $self->_run_timeout_callback($timer, $cb, $opaque)

A helper method for executing a callback in response to the expiry of a
timeout identified by C<$timer>. The C<$cb> and C<$opaque> parameters are
the callback and data registered for the timeout.  A removed timer is
skipped silently.

=head2 $self->_free_callback_opaque($ff, $opaque)

A helper method for freeing the data associated with a callback.  The
C<$ff> and C<$opaque> parameters are the callback and data registered for
the handle/timeout.

Call it once the watch or timer has been removed, from C<remove_handle>
or C<remove_timeout> or any time later.  The free function runs exactly
once: a second call is a no-op.  When called while libvirt is below on
the stack (inside C<remove_handle>, say), the free is queued and runs at
the next safe point: the next dispatch from the loop, or the next public
call from the program's top level.  Calling it for a watch that is still
registered croaks.  If an implementation drops all of a removed watch's
handles without calling it, the free is queued the same way.

=head2 $self->_run_pending_frees()

Run the frees that were requested while libvirt was below on the stack
and are still queued.  They run by themselves, and a loop needs nothing
of this: at the end of the dispatch or public call they were queued in,
or, when they were queued inside a libvirt call that the program made
(a connection closed, say: libvirt removes its watches from inside
C<virConnectClose>), through a timer of interval 0 that this module asks
the loop for, through libvirt, as that call returns; its dispatch runs
them, and the timer removes itself.  A loop may still call this from
its top level, to free sooner.  Inside a dispatch or a libvirt call it
does nothing.  Also callable as a function.

=head2 $self->_pending_frees()

The number of frees waiting in that queue: for tests and for loops that
want to know whether they are idle.

=head2 my $watch = Sys::Virt::Event::add_handle($fd, $events, $coderef)

Adds a watch on the file descriptor C<$fd> (a descriptor number or a Perl
filehandle) for the events C<$events> which is a mask of the FILE HANDLE
EVENTS constants listed later.  The C<$coderef> parameter is a subroutine
to invoke when an event is triggered. The subroutine will be passed three
parameters, the watch identifier, the file descriptor and the event mask.
This method returns the watch identifier which can be used to update or
remove the watch.  The coderef is copied: reassigning the caller's
variable changes nothing.  A filehandle is kept open for as long as the
watch lives, as L<EV> does: once the program drops its own reference,
the descriptor cannot be closed and reused by an unrelated file while
the watch still fires for it.  Croaks on a closed descriptor, unknown
mask bits, a value that is not a CODE reference, or when the event loop
refuses the watch (the message says why).  A descriptor that a Perl
filehandle holds is taken as open without asking the kernel; one closed
behind its filehandle's back (C<POSIX::close(fileno $fh)>) is not noticed
here.  Remove a watch before closing its descriptor: what a watch on a
closed descriptor reports depends on the loop (see L</CLOSED DESCRIPTORS>).

=head2 Sys::Virt::Event::update_handle($watch, $events)

Update the event mask for the file descriptor watch C<$watch> to use the
events C<$events>.  Croaks unless C<$watch> is a live watch made by
L</add_handle>.

=head2 Sys::Virt::Event::remove_handle($watch)

Remove the file descriptor watch C<$watch>.  Its coderef is released once
the event loop frees the watch.

=head2 my $timer = Sys::Virt::Event::add_timeout($frequency, $coderef)

Adds a timeout to trigger with C<$frequency> milliseconds interval (-1
disables it, 0 fires on every loop iteration; larger than libvirt's int
croaks).  The C<$coderef> parameter is a subroutine to invoke when an
event is triggered. The subroutine will be passed one parameter, the timer
identifier. This method returns the timer identifier which can be used to
update or remove the timer.

=head2 Sys::Virt::Event::update_timeout($timer, $frequency)

Update the timeout C<$timer> to have the frequency C<$frequency>
milliseconds.

=head2 Sys::Virt::Event::remove_timeout($timer)

Remove the timeout C<$timer>.

=head1 CONSTANTS

=head2 FILE HANDLE EVENTS

When integrating with an event loop the following constants define the
file descriptor events.  They can be imported one by one or all with the
C<:constants> tag:

  use Sys::Virt::Event qw(:constants);

=over 4

=item Sys::Virt::Event::HANDLE_READABLE

The file descriptor has data available for read without blocking

=item Sys::Virt::Event::HANDLE_WRITABLE

The file descriptor has ability to write data without blocking

=item Sys::Virt::Event::HANDLE_ERROR

An error occurred on the file descriptor.  Like libvirt's own loops, an
implementation reports it for every watch whose mask is not 0, whether or
not the mask asked for it.

=item Sys::Virt::Event::HANDLE_HANGUP

The remote end of the file descriptor closed.  Reported like
C<HANDLE_ERROR>.

=back

=head1 WRITING AN IMPLEMENTATION

=over 4

=item *

C<$cb>, C<$opaque> and C<$ff> are small objects that only this module can
make; the helpers recognise them by C-level magic, not by class, and
croak on anything else, including a callback passed where the opaque
value goes.  Copies made for a new thread are refused.

=item *

A watch may be dispatched after it was removed in the same loop
iteration: the helpers skip it.  Callbacks may add, update and remove
watches, their own included, while the loop is dispatching.

=item *

The free function may be requested from anywhere, once the watch is
removed; see L</_free_callback_opaque>.

=item *

Unknown or negative ids in C<update_*> are never passed on: libvirt
sometimes updates a timer it has already dropped.

=item *

Besides libvirt's own, the loop may be asked for a timer of interval 0
that this module adds and removes to run its queued frees (see
L</_run_pending_frees>).  Its free function does nothing.

=item *

In a process forked after a watch or timer was added, the helpers never
call it; the first dispatch there tells the loop to disable it (mask 0,
interval -1).  See L</FORK>.

=back

=head1 ERROR HANDLING

An exception in an implementation method or in a coderef given to
L</add_handle> or L</add_timeout> never unwinds through libvirt.  It is
caught, and libvirt gets the answer it expects: -1 for a failed add or
remove, nothing for an update or a callback.  The exception is then
reported: by default with C<warn>, prefixed with C<Sys::Virt::Event:> and
where it happened; or, when C<$Sys::Virt::Event::DIED> holds a code
reference, by calling it as C<< $DIED->($error, $where) >> instead.  An
exception from C<$DIED> itself is printed to STDERR.

  local $Sys::Virt::Event::DIED = sub {
      my ($error, $where) = @_;
      $log->error("$where: $error");
  };

A public call (L</add_handle>, L</remove_timeout>, ...) that libvirt
refuses croaks with the reason.

=head2 Callbacks given to Sys::Virt

L<Sys::Virt> calls the callbacks registered through it from libvirt's
dispatch without an C<eval>: on its own, a die in one of them unwinds
libvirt's frames, and the other events libvirt was delivering in the same
batch are lost (a domain destroyed and started again: the second event
never arrives).  While this module is loaded, these registrations hand
Sys::Virt a protected callback in place of the program's coderef, which
calls it as this module calls its own: a die is caught and reported as
above (C<$where> is, for instance, C<Sys::Virt domain event callback>),
and the rest of the batch is delivered.

  domain_event_register            domain_event_register_any
  network_event_register_any       storage_pool_event_register_any
  node_device_event_register_any   secret_event_register_any
  register_close_callback          Sys::Virt::Stream::add_callback

Callbacks given as code references are protected; one given as the name
of a sub is passed on as it is.  Nothing else changes: the callbacks get
the same arguments, the
registrations return the same ids, deregistration works as before, and
the same coderef may be registered several times.  The handlers of
C<recv_all>, C<send_all> and their sparse variants, called while the
program waits in that call, are left as they are.

=head2 $Sys::Virt::Event::PROTECT_CALLBACKS

True by default.  Set it to a false value (C<local> works) around a
registration to hand Sys::Virt the coderef itself, as without this
module:

  {
      local $Sys::Virt::Event::PROTECT_CALLBACKS = 0;
      $conn->register_close_callback(\&on_close);
  }

=head1 SIGNALS AND EXIT

Perl runs a signal handler at the next statement of whatever Perl code
runs after the signal arrived.  With a loop written in Perl, that is
often a loop method that libvirt called several times per API call, or a
callback below libvirt's dispatch: there a handler's die would be caught
and reported as that method's error (a Ctrl-C lost; an C<alarm> timeout
around an API call reported as success), or unwind libvirt's frames.  So
while any libvirt frame is below, this module holds pending signals, and
they run once libvirt has returned: at the program's next statement after
the API call, dispatch or C<run_default>, exactly as they run after any
other long call into C, and as they do with libvirt's default loop.  A
handler that dies, with any loop, stops the program where it would have
stopped without libvirt.  A long-running callback delays them until it
returns.  Where that is inside another event loop's callback (a held
handler runs as the dispatch returns, in the AnyEvent watcher that made
it), the die goes where that loop sends it: L<EV> hands a die in any of
its callbacks to C<$EV::DIED>, which warns and carries on unless the
program sets it to do otherwise, with or without this module.

C<exit> unwinds every Perl frame at once, and below libvirt that would
leave libvirt's locks held (a process that then never ends, in global
destruction).  So C<exit> called below a libvirt frame, from a loop
method, a callback, C<$Sys::Virt::Event::DIED> or a signal handler, is
held the same way: the code that called it dies with a message saying
so, libvirt gets the failure it expects, no further callback of the
program's is called, and the exit is carried out, with its status, as
soon as libvirt has returned.  C<END> blocks then run as usual, and may
use libvirt and the loop.  This covers the C<exit> calls compiled after
this module was loaded (load it first); C<POSIX::_exit> is immediate, as
always.

=head1 FORK

libvirt connections are not fork-safe: a forked child shares its
parent's sockets, and an event loop in the child that served the
parent's watches would read the parent's replies and events.  So the
watches and timers added before a fork stay silent in the child: the
helpers never call them there, and the first dispatch of one tells the
child's copy of the loop to disable it; the parent loses nothing.
libvirt's default loop cannot be told so, and C<run_default> croaks in a
forked child.  A loop built on a kernel event queue that a fork shares
(epoll, kqueue) must give the child its own before it changes a watch
there, or the change reaches the parent's queue too;
L<Sys::Virt::Event::AnyEvent> and L<Sys::Virt::Event::EV> do so on
L<EV>.  A child that needs libvirt opens its own connections, with the
parent's loop (a Perl loop or the native one), and must not use or
close the parent's connection objects: end it with C<POSIX::_exit>, or
C<exec>, rather than C<exit>, whose global destruction would close them.

=head2 $Sys::Virt::Event::FORKS

The number of forks between the process that loaded this module and the
current one: 0 in that process, 1 in its children, and so on.  Read-only.
A loop written in Perl compares it with the value it noted when it
started, to learn cheaply (C<$$> costs a system call) that it runs in a
child.

=head1 CLOSED DESCRIPTORS

A watch must be removed before its descriptor is closed.  What a watch on
a descriptor closed underneath it does depends on the loop:
libvirt's default loop spins on it, without ever calling the callback;
L<Sys::Virt::Event::AnyEvent> and L<Sys::Virt::Event::EV> say what they
do with each of EV's backends.  libvirt itself always removes its watches before closing.

=head1 THREADS

State is kept per interpreter.  The interpreter that registered the loop
is the only one libvirt calls into: when libvirt calls the loop from
another thread, the call is refused (-1 for an add or remove) and a
warning is printed once.  Public calls from another thread croak, and the
handle objects a new thread inherits are refused by the helpers.

=head1 SEE ALSO

L<Sys::Virt>, L<Sys::Virt::EventImpl>, L<Sys::Virt::Event::AnyEvent>,
L<Sys::Virt::Event::EV>, L<https://libvirt.org/html/libvirt-libvirt-event.html>

=head1 AUTHOR

The Sys-Virt-Event developers.  The API follows the one designed by
Daniel P. Berrange for L<Sys::Virt>.

=head1 COPYRIGHT AND LICENSE

This library is free software; you can redistribute it and/or modify it
under the same terms as Perl itself: either the GNU General Public License
as published by the Free Software Foundation (version 1 or, at your
option, any later version), or the Artistic License.

=cut

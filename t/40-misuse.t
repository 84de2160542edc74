#!/usr/bin/perl
#
# Misuse: what a new user passes to the public functions, the helpers and
# (through a misbehaving implementation) the trampolines of
# Sys::Virt::Event, and what they must get back.
#
# One table, one row per case:
#   name     what is tried
#   code     the attempt
#   expect   qr/.../  the attempt croaks, at the caller's line, with a
#                     message naming the function and the problem;
#            '...'    the correct behaviour, which the row's check asserts
#   check    receives what code returned (for a child row: the in_child()
#            result) and asserts the behaviour
#   warns    every warning must match it, and there must be one; without
#            it the row must not warn
#   child    run in a forked child under a time limit: a fresh process,
#            or a case that could crash or hang
#   needs    'Sys::Virt' or 'threads': skipped when missing
#
# Rows run in order.  The first group runs before this process registers
# any loop (its children are fresh processes); its last row registers the
# MisuseLoop that every later row uses.  After each row run here, nothing
# may be left registered in the loop.

use strict;
use warnings;

use FindBin ();
use lib "$FindBin::Bin/lib";

use Config;
use POSIX ();
use Test::More;

use Sys::Virt::Event qw(:constants);
use Sys::Virt::EventImpl;
use TestLoop;
use TestUtil qw(in_child have_sys_virt);

# TestLoop, with any of the six methods replaceable for the length of a row:
#   local $loop->{override}{add_handle} = sub { my ($self, @args) = @_; ... };
package MisuseLoop {
    use parent -norequire, 'TestLoop';

    for my $method (qw(add_handle update_handle remove_handle
                       add_timeout update_timeout remove_timeout)) {
        my $inherited = TestLoop->can($method);
        no strict 'refs';
        *{$method} = sub {
            my $self = shift;
            my $override = $self->{override}{$method};
            return $override ? $override->($self, @_) : $self->$inherited(@_);
        };
    }
}

# Subclasses that forgot methods.
package Misuse::HalfLoop {
    our @ISA = ('Sys::Virt::Event');
    sub add_handle { return 1 }
    sub remove_timeout { return 0 }
}
package Misuse::HalfImpl {
    our @ISA = ('Sys::Virt::EventImpl');
    sub add_handle { return 1 }
}
package Misuse::Unrelated {
    sub new { return bless {}, shift }
}

# Counts its own destruction: tells when a copied coderef is released.
package Misuse::Guard {
    sub new { my ($class, $count) = @_; return bless { count => $count }, $class }
    sub DESTROY { ${ $_[0]{count} }++ }
}

package Misuse::TiedScalar {
    sub TIESCALAR { my $v = 7; return bless \$v, shift }
    sub FETCH { return ${ $_[0] } }
    sub STORE { ${ $_[0] } = $_[1] }
}

package main;

my $loop = MisuseLoop->new;

sub new_pipe {
    pipe(my $r, my $w) or die "pipe: $!";
    return ($r, $w);
}

# A descriptor for the rows that must croak before anything is added, and
# a bareword pair for the glob row.
my ($PIPE_R, $PIPE_W) = new_pipe();
pipe(PIPE_R, PIPE_W) or die "pipe: $!";
close PIPE_W;

# A coderef whose release bumps $$count.
sub counted_cb {
    my ($count, $body) = @_;
    my $guard = Misuse::Guard->new($count);
    return sub { my $keep = $guard; $body->(@_) if $body };
}

# Runs $body->($watch, $entry, $writer) with a live public watch on a new
# pipe ($entry is the loop's record of it, with the handles), then removes
# the watch unless the body did.  Options: fd, events, cb.
sub with_watch {
    my ($body, %opt) = @_;
    my ($r, $w) = new_pipe();
    my $id = Sys::Virt::Event::add_handle(exists $opt{fd} ? $opt{fd} : $r,
                                          $opt{events} // HANDLE_READABLE,
                                          $opt{cb} // sub { });
    my @ret = eval { $body->($id, $loop->{handles}{$id}, $w) };
    my $err = $@;
    eval { Sys::Virt::Event::remove_handle($id) };
    die $err if $err;
    return wantarray ? @ret : $ret[0];
}

# The same with a live public timer: $body->($timer, $entry).  Options: ms, cb.
sub with_timer {
    my ($body, %opt) = @_;
    my $id = Sys::Virt::Event::add_timeout($opt{ms} // -1, $opt{cb} // sub { });
    my @ret = eval { $body->($id, $loop->{timeouts}{$id}) };
    my $err = $@;
    eval { Sys::Virt::Event::remove_timeout($id) };
    die $err if $err;
    return wantarray ? @ret : $ret[0];
}

# Runs $body->($timer) while a test:///default connection has a domain
# event callback, for which libvirt itself added a timer to the loop; then
# checks that the timer was left to libvirt, which removes it.
sub with_libvirt_timer {
    my ($body) = @_;
    my $conn = Sys::Virt->new(uri => 'test:///default');
    my $cbid = $conn->domain_event_register_any(
        undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE(), sub { });
    my ($timer) = keys %{ $loop->{timeouts} };
    die "libvirt added no timer\n" unless defined $timer;
    my @ret = eval { $body->($timer) };
    my $err = $@;
    my $kept = exists $loop->{timeouts}{$timer};
    $conn->domain_event_deregister_any($cbid);
    undef $conn;
    $loop->run_once(0);     # the 0 ms timer the module asks for runs the free
    die "libvirt's timer $timer was taken away from it\n" unless $kept;
    die "libvirt did not remove its timer $timer\n" if $loop->{timeouts}{$timer};
    die $err if $err;
    return @ret;
}

# Values that did not come from Sys::Virt::Event, for the handle slots of
# the helpers: [label, value].  $h is a live watch's entry.
sub forged_values {
    my ($h) = @_;
    my $text = 'some text';
    tie my $tied, 'Misuse::TiedScalar';
    my $pointer = 140737488355328;      # looks like an address
    return (
        [ 'undef', undef ], [ 'empty string', '' ], [ '0', 0 ], [ '1', 1 ],
        [ '-1', -1 ], [ '3.5', 3.5 ], [ '2**64', 2**64 ], [ 'NaN', 'NaN' ],
        [ 'a class name', 'Sys::Virt::Event::Callback' ],
        [ 'an address as a number', $pointer ],
        [ 'ref to undef', \undef ], [ 'ref to 1', \1 ],
        [ 'ref to an address (upstream raw pointer)', \$pointer ],
        [ 'ref to ref', \\1 ], [ 'array ref', [] ], [ 'hash ref', {} ],
        [ 'code ref', sub { } ], [ 'regexp', qr/x/ ], [ 'glob', *STDOUT ],
        [ 'glob ref', \*STDOUT ], [ 'IO ref', *STDOUT{IO} ],
        [ 'ref to an lvalue substr', \substr($text, 0, 1) ],
        [ 'ref to $!', \$! ], [ 'ref to a tied scalar', \$tied ],
        [ 'blessed ref to an address',
          bless(\(my $p = $pointer), 'Sys::Virt::Event::Callback') ],
        [ 'hash blessed as Opaque', bless({}, 'Sys::Virt::Event::Opaque') ],
        [ 'array blessed as FreeFunc', bless([], 'Sys::Virt::Event::FreeFunc') ],
        [ 'code blessed as Callback', bless(sub { }, 'Sys::Virt::Event::Callback') ],
        [ 'copy of a real handle\'s referent', \(my $c = ${ $h->{cb} }) ],
        [ 'the referent itself, not a reference', ${ $h->{cb} } ],
        [ 'ref to a real handle', \$h->{cb} ],
    );
}

# The warning an exception below libvirt produces: "Sys::Virt::Event:",
# where, and the error.
sub warning_re {
    my ($where, $error) = @_;
    return qr/^Sys::Virt::Event: $where(?: died)?: $error/;
}

my @ROWS = (
    '--- before any loop is registered (each in a fresh child)',
    (map {
        my ($func, @args) = @$_;
        { name   => "$func before any loop is registered",
          child  => 1,
          code   => sub { no strict 'refs'; &{"Sys::Virt::Event::$func"}(@args) },
          expect => qr/^Sys::Virt::Event::$func: no event loop is registered; call Sys::Virt::Event::register_default\(\) or register\(\$impl\) first/ }
    } [ add_handle => $PIPE_R, HANDLE_READABLE, sub { } ], [ update_handle => 1, HANDLE_READABLE ],
      [ remove_handle => 1 ], [ add_timeout => 10, sub { } ], [ update_timeout => 1, 10 ],
      [ remove_timeout => 1 ]),
    { name   => 'run_default with no loop at all',
      child  => 1, timeout => 5,
      code   => sub { Sys::Virt::Event::run_default() },
      expect => qr/^Sys::Virt::Event::run_default: the default event loop is not registered; call Sys::Virt::Event::register_default\(\) first/ },
    { name   => 'register_default twice',
      child  => 1,
      code   => sub {
          Sys::Virt::Event::register_default();
          Sys::Virt::Event::register_default();
          my $fired = 0;
          my $t = Sys::Virt::Event::add_timeout(0, sub { $fired++ });
          Sys::Virt::Event::run_default() until $fired;   # bounded by the child's limit
          Sys::Virt::Event::remove_timeout($t);
          print "fired $fired\n";
      },
      expect => 'the second is a no-op; the default loop runs a timer',
      check  => sub { like($_[0]{output}, qr/^fired 1$/m, 'the timer fired once') } },
    { name   => 'register($impl) after register_default',
      child  => 1,
      code   => sub { Sys::Virt::Event::register_default(); MisuseLoop->new->register },
      expect => qr/^Sys::Virt::Event::register: libvirt's default event loop is already registered, and libvirt accepts one loop per process/ },
    { name   => 'register this file\'s loop (every later row uses it)',
      code   => sub {
          my @returned = $loop->register;
          return (scalar(@returned), with_timer(sub { exists $loop->{timeouts}{ $_[0] } }));
      },
      expect => 'returns nothing, and libvirt now calls this loop',
      check  => sub {
          is($_[0], 0, 'register returned nothing');
          ok($_[1], 'add_timeout reached the loop');
      } },

    '--- register misuse',
    { name   => 'register() without an implementation',
      code   => sub { Sys::Virt::Event::register() },
      expect => qr/^Sys::Virt::Event::register: the implementation must be an object of a subclass of Sys::Virt::Event or Sys::Virt::EventImpl/ },
    { name   => 'register a class name instead of an object',
      code   => sub { Sys::Virt::Event::register('MisuseLoop') },
      expect => qr/^Sys::Virt::Event::register: the implementation must be an object/ },
    { name   => 'register an unblessed hash',
      code   => sub { Sys::Virt::Event::register({}) },
      expect => qr/^Sys::Virt::Event::register: the implementation must be an object/ },
    { name   => 'register an object of an unrelated class',
      code   => sub { Sys::Virt::Event::register(Misuse::Unrelated->new) },
      expect => qr/^Sys::Virt::Event::register: the implementation must be an object of a subclass/ },
    { name   => 'register a Sys::Virt::Event subclass missing four methods',
      code   => sub { Sys::Virt::Event::register(bless {}, 'Misuse::HalfLoop') },
      expect => qr/^Sys::Virt::Event::register: Misuse::HalfLoop does not implement update_handle, remove_handle, add_timeout, update_timeout at / },
    { name   => 'register a Sys::Virt::EventImpl subclass missing five methods',
      code   => sub { bless({}, 'Misuse::HalfImpl')->register },
      expect => qr/^Sys::Virt::Event::register: Misuse::HalfImpl does not implement update_handle, remove_handle, add_timeout, update_timeout, remove_timeout at / },
    { name   => 'register a second, different implementation',
      code   => sub { MisuseLoop->new->register },
      expect => qr/^Sys::Virt::Event::register: an event loop \(MisuseLoop\) is already registered, and libvirt accepts one loop per process/ },
    { name   => 'register the same object again, as a method and as a function',
      code   => sub {
          my @r = ($loop->register, Sys::Virt::Event::register($loop));
          return (scalar(@r), with_timer(sub { exists $loop->{timeouts}{ $_[0] } }));
      },
      expect => 'a no-op: nothing returned, the same loop still in use',
      check  => sub {
          is($_[0], 0, 'nothing returned');
          ok($_[1], 'libvirt still calls the same loop');
      } },
    { name   => 'register_default after register($impl)',
      code   => sub { Sys::Virt::Event::register_default() },
      expect => qr/^Sys::Virt::Event::register_default: a Perl event loop is already registered, and libvirt accepts one loop per process/ },
    { name   => 'run_default while a Perl loop is registered',
      child  => 1, timeout => 5,
      code   => sub { Sys::Virt::Event::run_default() },
      expect => qr/^Sys::Virt::Event::run_default: the default event loop is not registered/ },

    '--- add_handle',
    (map {
        my ($what, $fd, $why) = @$_;
        { name   => "add_handle with \$fd $what",
          code   => sub { Sys::Virt::Event::add_handle($fd, HANDLE_READABLE, sub { }) },
          expect => qr/^Sys::Virt::Event::add_handle: \$fd $why/ }
    } [ 'undef', undef, qr/must be an integer from 0 to 2147483647, not 'undef'/ ],
      [ 'a string', 'stdin', qr/must be an integer from 0 to 2147483647, not 'stdin'/ ],
      [ '3.5', 3.5, qr/must be an integer from 0 to 2147483647, not '3.5'/ ],
      [ 'NaN', 'NaN', qr/must be an integer from 0 to 2147483647, not 'NaN'/ ],
      [ '2**31', 2**31, qr/must be an integer from 0 to 2147483647, not '2147483648'/ ],
      [ '2**64', 2**64, qr/must be an integer from 0 to 2147483647, not '1\.8\d*e\+19'/ ],
      [ '-1', -1, qr/must be an integer from 0 to 2147483647, not '-1'/ ],
      [ 'a closed filehandle',
        do { open(my $fh, '<', '/dev/null') or die; close $fh; $fh },
        qr/is not an open filehandle/ ],
      [ 'a glob never opened (\*NEVER_OPENED)', do { no warnings 'once'; \*NEVER_OPENED },
        qr/is not an open filehandle/ ],
      [ 'an in-memory filehandle (no descriptor)',
        do { open(my $fh, '<', \'data') or die; $fh },
        qr/(?:is not an open filehandle|has no file descriptor)/ ]),
    { name   => 'add_handle with a closed descriptor number',
      code   => sub {
          open(my $fh, '<', '/dev/null') or die "open: $!";
          my $fd = fileno $fh;
          close $fh;
          Sys::Virt::Event::add_handle($fd, HANDLE_READABLE, sub { });
      },
      expect => qr/^Sys::Virt::Event::add_handle: \$fd \(\d+\) is not an open file descriptor/ },
    { name   => 'add_handle with a descriptor no Perl filehandle holds (POSIX::open)',
      code   => sub {
          my $fd = POSIX::open('/dev/null', POSIX::O_RDONLY()) // die "open: $!";
          my $watched = with_watch(sub { $_[1]{fd} }, fd => $fd);
          POSIX::close($fd);
          return ($watched, $fd);
      },
      expect => 'accepted: the kernel says it is open',
      check  => sub { is($_[0], $_[1], 'the loop watches that descriptor') } },
    { name   => 'add_handle with a descriptor closed by POSIX::close',
      code   => sub {
          my $fd = POSIX::open('/dev/null', POSIX::O_RDONLY()) // die "open: $!";
          POSIX::close($fd);
          Sys::Virt::Event::add_handle($fd, HANDLE_READABLE, sub { });
      },
      expect => qr/^Sys::Virt::Event::add_handle: \$fd \(\d+\) is not an open file descriptor/ },
    { name   => 'add_handle with a filehandle',
      code   => sub {
          my ($r, $w) = new_pipe();
          my @calls;
          with_watch(sub {
              my ($id, $entry) = @_;
              syswrite $w, 'x';
              $loop->run_until(sub { @calls }, 2);
              return ($id, $entry->{fd}, fileno($r), $calls[0]);
          }, fd => $r, cb => sub { push @calls, [@_] });
      },
      expect => 'accepted: the loop watches fileno($fh); the callback gets ($watch, $fd, $events)',
      check  => sub {
          my ($id, $watched, $fileno, $call) = @_;
          is($watched, $fileno, 'the loop was asked to watch fileno($fh)');
          is_deeply($call, [ $id, $fileno, HANDLE_READABLE ], 'callback arguments');
      } },
    { name   => 'add_handle with a bare glob (*PIPE_R)',
      code   => sub { with_watch(sub { $_[1]{fd} }, fd => *PIPE_R) },
      expect => 'accepted: the loop watches its fileno',
      check  => sub { is($_[0], fileno(PIPE_R), 'watched fileno(PIPE_R)') } },
    { name   => 'add_handle with an unknown event bit (0x10)',
      code   => sub { Sys::Virt::Event::add_handle($PIPE_R, 0x10, sub { }) },
      expect => qr/^Sys::Virt::Event::add_handle: \$events has unknown bits 0x10 \(known: HANDLE_READABLE, HANDLE_WRITABLE, HANDLE_ERROR, HANDLE_HANGUP\)/ },
    { name   => 'add_handle with events -1',
      code   => sub { Sys::Virt::Event::add_handle($PIPE_R, -1, sub { }) },
      expect => qr/^Sys::Virt::Event::add_handle: \$events must be an integer from 0 to 2147483647, not '-1'/ },
    (map {
        my ($what, $coderef) = @$_;
        { name   => "add_handle with \$coderef $what",
          code   => sub { Sys::Virt::Event::add_handle($PIPE_R, HANDLE_READABLE, $coderef) },
          expect => qr/^Sys::Virt::Event::add_handle: \$coderef is not a CODE reference/ }
    } [ 'a hash ref', {} ], [ 'a sub name string', 'main::on_ready' ],
      [ 'a blessed object', Misuse::Unrelated->new ]),
    { name   => 'add_handle with two arguments',
      code   => sub { Sys::Virt::Event::add_handle($PIPE_R, HANDLE_READABLE) },
      expect => qr/^Usage: Sys::Virt::Event::add_handle\(fd, events, coderef\)/ },
    { name   => 'add_handle called as a class method',
      code   => sub { Sys::Virt::Event->add_handle($PIPE_R, HANDLE_READABLE, sub { }) },
      expect => qr/^Usage: Sys::Virt::Event::add_handle\(fd, events, coderef\)/ },
    { name   => 'add_handle, then reassign the variable holding the coderef',
      code   => sub {
          my ($r, $w) = new_pipe();
          my @fired;
          my $cb = sub { push @fired, 'original' };
          my $id = Sys::Virt::Event::add_handle($r, HANDLE_READABLE, $cb);
          $cb = sub { push @fired, 'replacement' };
          syswrite $w, 'x';
          $loop->run_until(sub { @fired }, 2);
          Sys::Virt::Event::remove_handle($id);
          return $fired[0];
      },
      expect => 'the coderef was copied: the original fires',
      check  => sub { is($_[0], 'original', 'the original coderef fired') } },

    '--- update_handle and remove_handle',
    { name   => 'update_handle of a watch never created',
      code   => sub { Sys::Virt::Event::update_handle(4242, HANDLE_READABLE) },
      expect => qr/^Sys::Virt::Event::update_handle: watch 4242 is not a live watch created by Sys::Virt::Event::add_handle/ },
    { name   => 'remove_handle of a watch never created',
      code   => sub { Sys::Virt::Event::remove_handle(4242) },
      expect => qr/^Sys::Virt::Event::remove_handle: watch 4242 is not a live watch created by Sys::Virt::Event::add_handle/ },
    { name   => 'remove_handle twice',
      code   => sub { with_watch(sub { Sys::Virt::Event::remove_handle($_[0]) for 1 .. 2 }) },
      expect => qr/^Sys::Virt::Event::remove_handle: watch \d+ is not a live watch/ },
    { name   => 'update_handle after remove_handle',
      code   => sub {
          with_watch(sub {
              Sys::Virt::Event::remove_handle($_[0]);
              Sys::Virt::Event::update_handle($_[0], HANDLE_WRITABLE);
          });
      },
      expect => qr/^Sys::Virt::Event::update_handle: watch \d+ is not a live watch/ },
    { name   => 'update_handle given a timer id',
      code   => sub { with_timer(sub { Sys::Virt::Event::update_handle($_[0], HANDLE_READABLE) }) },
      expect => qr/^Sys::Virt::Event::update_handle: watch \d+ is not a live watch created by Sys::Virt::Event::add_handle/ },
    { name   => 'update_handle with an unknown event bit',
      code   => sub { with_watch(sub { Sys::Virt::Event::update_handle($_[0], 0x40) }) },
      expect => qr/^Sys::Virt::Event::update_handle: \$events has unknown bits 0x40/ },
    { name   => 'update_handle with one argument',
      code   => sub { Sys::Virt::Event::update_handle(1) },
      expect => qr/^Usage: Sys::Virt::Event::update_handle\(watch, events\)/ },
    { name   => 'remove_handle(-2**31-1)',
      code   => sub { Sys::Virt::Event::remove_handle(-2**31 - 1) },
      expect => qr/^Sys::Virt::Event::remove_handle: \$watch must be an integer from -2147483648 to 2147483647, not '-2147483649'/ },
    { name   => 'update_handle to 0, then back',
      code   => sub {
          my $fired = 0;
          with_watch(sub {
              my ($id, $entry, $w) = @_;
              Sys::Virt::Event::update_handle($id, 0);
              syswrite $w, 'x';
              $loop->run_once(50) for 1 .. 3;
              my $while_disabled = $fired;
              Sys::Virt::Event::update_handle($id, HANDLE_READABLE);
              $loop->run_until(sub { $fired }, 2);
              return ($while_disabled, $fired);
          }, cb => sub { $fired++ });
      },
      expect => 'mask 0 disables the watch; the mask back re-enables it',
      check  => sub {
          is($_[0], 0, 'nothing fired while disabled');
          ok($_[1] > 0, 'fired once re-enabled');
      } },

    '--- add_timeout, update_timeout, remove_timeout',
    (map {
        my ($what, $ms, $shown) = @$_;
        { name   => "add_timeout with frequency $what",
          code   => sub { Sys::Virt::Event::add_timeout($ms, sub { }) },
          expect => qr/^Sys::Virt::Event::add_timeout: \$frequency must be an integer from -1 to 2147483647, not '$shown'/ }
    } [ '-2 (below -1)', -2, '-2' ], [ '2**31 (above INT_MAX)', 2**31, '2147483648' ],
      [ '3.5', 3.5, '3\.5' ], [ 'inf', 9**9**9, 'Inf' ], [ 'undef', undef, 'undef' ]),
    { name   => 'add_timeout with $coderef a hash ref',
      code   => sub { Sys::Virt::Event::add_timeout(10, {}) },
      expect => qr/^Sys::Virt::Event::add_timeout: \$coderef is not a CODE reference/ },
    { name   => 'add_timeout with one argument',
      code   => sub { Sys::Virt::Event::add_timeout(10) },
      expect => qr/^Usage: Sys::Virt::Event::add_timeout\(frequency, coderef\)/ },
    { name   => 'add_timeout, then reassign the variable holding the coderef',
      code   => sub {
          my @fired;
          my $cb = sub { push @fired, "original @_" };
          my $id = Sys::Virt::Event::add_timeout(0, $cb);
          $cb = sub { push @fired, 'replacement' };
          $loop->run_until(sub { @fired }, 2);
          Sys::Virt::Event::remove_timeout($id);
          return ($id, $fired[0]);
      },
      expect => 'the coderef was copied: the original fires, with the timer id',
      check  => sub { is($_[1], "original $_[0]", 'the original coderef fired') } },
    { name   => 'add_timeout with frequency -1, then update_timeout to 0',
      code   => sub {
          my $fired = 0;
          with_timer(sub {
              $loop->run_once(10) for 1 .. 3;
              my $while_disabled = $fired;
              Sys::Virt::Event::update_timeout($_[0], 0);
              $loop->run_until(sub { $fired }, 2);
              return ($while_disabled, $fired);
          }, ms => -1, cb => sub { $fired++ });
      },
      expect => '-1 is disabled, 0 fires on the next iteration',
      check  => sub {
          is($_[0], 0, 'nothing fired while disabled');
          ok($_[1] > 0, 'fired once set to 0');
      } },
    { name   => 'add_timeout with a coderef to a sub never defined',
      code   => sub {
          with_timer(sub { $loop->run_once(0) for 1 .. 2 }, ms => 0, cb => \&Misuse::never_defined);
          my $fired = 0;
          return with_timer(sub { $loop->run_until(sub { $fired }, 2) }, ms => 0, cb => sub { $fired++ });
      },
      expect => 'accepted; each firing is reported, and the loop keeps going',
      warns  => warning_re('callback of timer \d+', 'Undefined subroutine &Misuse::never_defined called'),
      check  => sub { ok($_[0], 'a later timer still fires') } },
    { name   => 'update_timeout of a timer never created',
      code   => sub { Sys::Virt::Event::update_timeout(4242, 10) },
      expect => qr/^Sys::Virt::Event::update_timeout: timer 4242 is not a live timer created by Sys::Virt::Event::add_timeout/ },
    { name   => 'remove_timeout of a timer never created',
      code   => sub { Sys::Virt::Event::remove_timeout(4242) },
      expect => qr/^Sys::Virt::Event::remove_timeout: timer 4242 is not a live timer created by Sys::Virt::Event::add_timeout/ },
    { name   => 'remove_timeout twice',
      code   => sub { with_timer(sub { Sys::Virt::Event::remove_timeout($_[0]) for 1 .. 2 }) },
      expect => qr/^Sys::Virt::Event::remove_timeout: timer \d+ is not a live timer/ },
    { name   => 'remove_timeout given a watch id',
      code   => sub { with_watch(sub { Sys::Virt::Event::remove_timeout($_[0]) }) },
      expect => qr/^Sys::Virt::Event::remove_timeout: timer \d+ is not a live timer created by Sys::Virt::Event::add_timeout/ },
    { name   => 'update_timeout with frequency -2',
      code   => sub { with_timer(sub { Sys::Virt::Event::update_timeout($_[0], -2) }) },
      expect => qr/^Sys::Virt::Event::update_timeout: \$frequency must be an integer from -1 to 2147483647, not '-2'/ },
    { name   => 'update_timeout with timer 2**64',
      code   => sub { Sys::Virt::Event::update_timeout(2**64, 10) },
      expect => qr/^Sys::Virt::Event::update_timeout: \$timer must be an integer from -2147483648 to 2147483647/ },
    { name   => 'update_timeout of the timer libvirt itself added',
      needs  => 'Sys::Virt',
      code   => sub { with_libvirt_timer(sub { Sys::Virt::Event::update_timeout($_[0], 0) }) },
      expect => qr/^Sys::Virt::Event::update_timeout: timer \d+ is not a live timer created by Sys::Virt::Event::add_timeout/ },
    { name   => 'remove_timeout of the timer libvirt itself added',
      needs  => 'Sys::Virt',
      code   => sub { with_libvirt_timer(sub { Sys::Virt::Event::remove_timeout($_[0]) }) },
      expect => qr/^Sys::Virt::Event::remove_timeout: timer \d+ is not a live timer created by Sys::Virt::Event::add_timeout/ },

    '--- helpers: no invocant, forged values',
    { name   => '_run_handle_callback as a plain function (5 arguments)',
      code   => sub {
          with_watch(sub {
              my ($id, $h) = @_;
              Sys::Virt::Event::_run_handle_callback($id, $h->{fd}, HANDLE_READABLE, $h->{cb}, $h->{opaque});
          });
      },
      expect => qr/^Usage: Sys::Virt::Event::_run_handle_callback\(self, watch, fd, events, cb, opaque\)/ },
    { name   => '_run_timeout_callback as a plain function (3 arguments)',
      code   => sub { with_timer(sub { Sys::Virt::Event::_run_timeout_callback($_[0], $_[1]{cb}, $_[1]{opaque}) }) },
      expect => qr/^Usage: Sys::Virt::Event::_run_timeout_callback\(self, timer, cb, opaque\)/ },
    { name   => '_free_callback_opaque as a plain function (2 arguments)',
      code   => sub { with_timer(sub { Sys::Virt::Event::_free_callback_opaque($_[1]{ff}, $_[1]{opaque}) }) },
      expect => qr/^Usage: Sys::Virt::Event::_free_callback_opaque\(self, ff, opaque\)/ },
    (map {
        my ($what, $make) = @$_;
        { name   => "_run_handle_callback with \$cb $what",
          code   => sub {
              with_watch(sub {
                  my ($id, $h) = @_;
                  $loop->_run_handle_callback($id, $h->{fd}, HANDLE_READABLE, $make->($h), $h->{opaque});
              });
          },
          expect => qr/^Sys::Virt::Event::_run_handle_callback: \$cb is not a callback handle created by Sys::Virt::Event/ }
    } [ 'a plain string', sub { 'callback' } ],
      [ 'a ref to an integer (upstream\'s raw pointer)', sub { \(my $p = 140737488355328) } ],
      [ 'blessed into Sys::Virt::Event::Callback by hand',
        sub { bless \(my $p = 140737488355328), 'Sys::Virt::Event::Callback' } ],
      [ 'a copy of the real handle\'s referent', sub { \(my $c = ${ $_[0]{cb} }) } ]),
    { name   => '_run_timeout_callback with $opaque blessed into Sys::Virt::Event::Opaque by hand',
      code   => sub { with_timer(sub { $loop->_run_timeout_callback($_[0], $_[1]{cb}, bless({}, 'Sys::Virt::Event::Opaque')) }) },
      expect => qr/^Sys::Virt::Event::_run_timeout_callback: \$opaque is not an? opaque handle created by Sys::Virt::Event/ },
    { name   => '_free_callback_opaque with $ff blessed into Sys::Virt::Event::FreeFunc by hand',
      code   => sub { with_timer(sub { $loop->_free_callback_opaque(bless([], 'Sys::Virt::Event::FreeFunc'), $_[1]{opaque}) }) },
      expect => qr/^Sys::Virt::Event::_free_callback_opaque: \$ff is not a free-function handle created by Sys::Virt::Event/ },
    { name   => '_run_handle_callback with an unknown event bit',
      code   => sub {
          with_watch(sub {
              my ($id, $h) = @_;
              $loop->_run_handle_callback($id, $h->{fd}, 0x20, $h->{cb}, $h->{opaque});
          });
      },
      expect => qr/^Sys::Virt::Event::_run_handle_callback: \$events has unknown bits 0x20/ },
    { name   => 'forged values in every handle slot of the three helpers',
      child  => 1,
      code   => sub {
          my ($refused, $tried) = (0, 0);
          with_watch(sub {
              my ($w, $h) = @_;
              with_timer(sub {
                  my ($t, $tm) = @_;
                  for my $forged (forged_values($h)) {
                      my ($label, $v) = @$forged;
                      for my $call (
                          [ _run_handle_callback => sub { $loop->_run_handle_callback($w, $h->{fd}, HANDLE_READABLE, $v, $h->{opaque}) } ],
                          [ _run_handle_callback => sub { $loop->_run_handle_callback($w, $h->{fd}, HANDLE_READABLE, $h->{cb}, $v) } ],
                          [ _run_timeout_callback => sub { $loop->_run_timeout_callback($t, $v, $tm->{opaque}) } ],
                          [ _run_timeout_callback => sub { $loop->_run_timeout_callback($t, $tm->{cb}, $v) } ],
                          [ _free_callback_opaque => sub { $loop->_free_callback_opaque($v, $h->{opaque}) } ],
                          [ _free_callback_opaque => sub { $loop->_free_callback_opaque($h->{ff}, $v) } ],
                      ) {
                          my ($func, $code) = @$call;
                          $tried++;
                          if (eval { $code->(); 1 }) {
                              print "accepted by $func: $label\n";
                          } elsif ($@ =~ /^Sys::Virt::Event::\Q$func\E: \$(?:cb|opaque|ff) /) {
                              $refused++;
                          } else {
                              print "unexpected from $func for $label: $@";
                          }
                      }
                  }
              });
          });
          print "refused $refused of $tried\n";
      },
      expect => 'each one croaks naming the helper and the slot; no crash',
      check  => sub {
          like($_[0]{output}, qr/^refused (\d+) of \1$/m, 'every forged value refused');
          unlike($_[0]{output}, qr/^(?:accepted|unexpected)/m, 'none accepted, no other error');
      } },

    '--- helpers: real handles in the wrong place',
    { name   => 'a timer\'s $cb given to _run_handle_callback',
      code   => sub {
          with_watch(sub {
              my ($w, $h) = @_;
              with_timer(sub { $loop->_run_handle_callback($w, $h->{fd}, HANDLE_READABLE, $_[1]{cb}, $h->{opaque}) });
          });
      },
      expect => qr/^Sys::Virt::Event::_run_handle_callback: \$cb belongs to a timer, not a watch/ },
    { name   => 'a watch\'s $cb given to _run_timeout_callback',
      code   => sub {
          with_watch(sub {
              my ($w, $h) = @_;
              with_timer(sub { $loop->_run_timeout_callback($_[0], $h->{cb}, $_[1]{opaque}) });
          });
      },
      expect => qr/^Sys::Virt::Event::_run_timeout_callback: \$cb belongs to a watch, not a timer/ },
    { name   => '$cb and $opaque swapped',
      code   => sub {
          with_watch(sub {
              my ($id, $h) = @_;
              $loop->_run_handle_callback($id, $h->{fd}, HANDLE_READABLE, $h->{opaque}, $h->{cb});
          });
      },
      expect => qr/^Sys::Virt::Event::_run_handle_callback: \$cb is an opaque handle, not a callback handle \(are the arguments in the wrong order\?\)/ },
    { name   => '$ff passed as $cb',
      code   => sub { with_timer(sub { $loop->_run_timeout_callback($_[0], $_[1]{ff}, $_[1]{opaque}) }) },
      expect => qr/^Sys::Virt::Event::_run_timeout_callback: \$cb is a free-function handle, not a callback handle/ },
    { name   => '$cb passed as $ff',
      code   => sub { with_timer(sub { $loop->_free_callback_opaque($_[1]{cb}, $_[1]{opaque}) }) },
      expect => qr/^Sys::Virt::Event::_free_callback_opaque: \$ff is a callback handle, not a free-function handle/ },
    { name   => '$ff and $opaque swapped',
      code   => sub { with_timer(sub { $loop->_free_callback_opaque($_[1]{opaque}, $_[1]{ff}) }) },
      expect => qr/^Sys::Virt::Event::_free_callback_opaque: \$ff is an opaque handle, not a free-function handle/ },
    { name   => '$cb and $opaque from two different watches',
      code   => sub {
          with_watch(sub {
              my ($w1, $h1) = @_;
              with_watch(sub { $loop->_run_handle_callback($w1, $h1->{fd}, HANDLE_READABLE, $h1->{cb}, $_[1]{opaque}) });
          });
      },
      expect => qr/^Sys::Virt::Event::_run_handle_callback: \$cb and \$opaque belong to different watches/ },
    { name   => '$ff and $opaque from two different timers',
      code   => sub {
          with_timer(sub {
              my ($t1, $e1) = @_;
              with_timer(sub { $loop->_free_callback_opaque($e1->{ff}, $_[1]{opaque}) });
          });
      },
      expect => qr/^Sys::Virt::Event::_free_callback_opaque: \$ff and \$opaque belong to different registrations/ },
    { name   => 'the wrong $watch for the $cb',
      code   => sub {
          with_watch(sub {
              my ($id, $h) = @_;
              $loop->_run_handle_callback($id + 1000, $h->{fd}, HANDLE_READABLE, $h->{cb}, $h->{opaque});
          });
      },
      expect => qr/^Sys::Virt::Event::_run_handle_callback: \$watch is \d+ but \$cb belongs to watch \d+/ },
    { name   => 'the wrong $fd for the $cb',
      code   => sub {
          with_watch(sub {
              my ($id, $h) = @_;
              $loop->_run_handle_callback($id, fileno(STDERR), HANDLE_READABLE, $h->{cb}, $h->{opaque});
          });
      },
      expect => qr/^Sys::Virt::Event::_run_handle_callback: \$fd is 2 but watch \d+ is on fd \d+/ },
    { name   => 'the wrong $timer for the $cb',
      code   => sub { with_timer(sub { $loop->_run_timeout_callback($_[0] + 1000, $_[1]{cb}, $_[1]{opaque}) }) },
      expect => qr/^Sys::Virt::Event::_run_timeout_callback: \$timer is \d+ but \$cb belongs to timer \d+/ },

    '--- stale handles',
    { name   => 'dispatch a watch removed but not yet freed',
      code   => sub {
          local $loop->{free_in_remove} = 0;
          my $fired = 0;
          my ($id, $h) = with_watch(sub { @_ }, cb => sub { $fired++ });
          $loop->_run_handle_callback($id, $h->{fd}, HANDLE_READABLE, $h->{cb}, $h->{opaque});
          $loop->run_once(0);     # where this loop frees it
          return $fired;
      },
      expect => 'a silent no-op',
      check  => sub { is($_[0], 0, 'the callback did not run') } },
    { name   => 'dispatch a watch removed and freed',
      code   => sub {
          my $fired = 0;
          my ($id, $h) = with_watch(sub { @_ }, cb => sub { $fired++ });
          $loop->_run_handle_callback($id, $h->{fd}, HANDLE_READABLE, $h->{cb}, $h->{opaque});
          return $fired;
      },
      expect => 'a silent no-op',
      check  => sub { is($_[0], 0, 'the callback did not run') } },
    { name   => 'dispatch a removed timer',
      code   => sub {
          my $fired = 0;
          my ($id, $t) = with_timer(sub { @_ }, ms => 0, cb => sub { $fired++ });
          $loop->_run_timeout_callback($id, $t->{cb}, $t->{opaque});
          return $fired;
      },
      expect => 'a silent no-op',
      check  => sub { is($_[0], 0, 'the callback did not run') } },
    { name   => '_free_callback_opaque twice after removal',
      code   => sub {
          local $loop->{free_in_remove} = 0;
          my $released = 0;
          my ($id, $t) = with_timer(sub { @_ }, cb => counted_cb(\$released));
          @{ $loop->{later} } = ();
          $loop->_free_callback_opaque($t->{ff}, $t->{opaque});
          my $after_first = $released;
          $loop->_free_callback_opaque($t->{ff}, $t->{opaque});
          return ($after_first, $released);
      },
      expect => 'the first frees, the second is a no-op',
      check  => sub {
          is($_[0], 1, 'the coderef was released by the first free');
          is($_[1], 1, 'and not again by the second');
      } },
    { name   => '_free_callback_opaque of a live watch',
      code   => sub { with_watch(sub { $loop->_free_callback_opaque($_[1]{ff}, $_[1]{opaque}) }) },
      expect => qr/^Sys::Virt::Event::_free_callback_opaque: watch \d+ is still registered; free it after libvirt removed it/ },
    { name   => '_free_callback_opaque of a live timer',
      code   => sub { with_timer(sub { $loop->_free_callback_opaque($_[1]{ff}, $_[1]{opaque}) }) },
      expect => qr/^Sys::Virt::Event::_free_callback_opaque: timer \d+ is still registered/ },
    { name   => 'handles kept from an add the implementation refused',
      code   => sub {
          my ($kept, $fired) = (undef, 0);
          local $loop->{override}{add_timeout} = sub { $kept = [ @_[2 .. 4] ]; return 0 };
          my $croaked = eval { Sys::Virt::Event::add_timeout(0, sub { $fired++ }); 0 } // 1;
          $loop->_run_timeout_callback(1, $kept->[0], $kept->[1]);
          $loop->_free_callback_opaque($kept->[2], $kept->[1]);
          return ($croaked, $fired);
      },
      expect => 'dispatching them and freeing them are silent no-ops',
      warns  => warning_re('add_timeout method of MisuseLoop', q{returned '0', not a positive timer id$}),
      check  => sub {
          ok($_[0], 'the add itself croaked');
          is($_[1], 0, 'the callback never ran');
      } },
    { name   => 'a timer callback removes its own timer',
      code   => sub {
          my ($released, $during) = (0, undef);
          Sys::Virt::Event::add_timeout(0, counted_cb(\$released, sub {
              Sys::Virt::Event::remove_timeout($_[0]);
              $during = $released;
          }));
          $loop->run_until(sub { defined $during }, 2);
          return ($during, $released);
      },
      expect => 'its coderef is released after the callback returns, never inside it',
      check  => sub {
          is($_[0], 0, 'not released while running');
          is($_[1], 1, 'released once the dispatch returned');
      } },
    { name   => 'the loop drops a removed timer\'s handles without freeing',
      code   => sub {
          my $released = 0;
          {
              local $loop->{free_in_remove} = 0;
              with_timer(sub { }, cb => counted_cb(\$released));
              @{ $loop->{later} } = ();
          }
          with_timer(sub { });       # the next public calls
          return $released;
      },
      expect => 'the free is queued and runs at the next public call',
      check  => sub { is($_[0], 1, 'the coderef was released once') } },

    '--- implementation methods that die or return garbage',
    (map {
        my $method = $_;
        { name   => "$method method dies",
          code   => sub {
              local $loop->{override}{$method} = sub { die "not today\n" };
              $method eq 'add_handle'
                  ? Sys::Virt::Event::add_handle($PIPE_R, HANDLE_READABLE, sub { })
                  : Sys::Virt::Event::add_timeout(10, sub { });
          },
          expect => qr/^Sys::Virt::Event::$method: $method method of MisuseLoop died: not today/,
          warns  => warning_re("$method method of MisuseLoop", 'not today$') }
    } qw(add_handle add_timeout)),
    { name   => 'add_handle method dies, with $DIED set',
      code   => sub {
          my @reported;
          local $Sys::Virt::Event::DIED = sub { push @reported, [@_] };
          local $loop->{override}{add_handle} = sub { die "hooked\n" };
          my $err = eval { Sys::Virt::Event::add_handle($PIPE_R, HANDLE_READABLE, sub { }); '' } // $@;
          return ($err, \@reported);
      },
      expect => '$DIED gets ($error, $where) instead of a warning; the add still croaks',
      check  => sub {
          like($_[0], qr/^Sys::Virt::Event::add_handle: add_handle method of MisuseLoop died: hooked/, 'the add croaked');
          is_deeply($_[1], [ [ "hooked\n", 'add_handle method of MisuseLoop' ] ], '$DIED was called once with ($error, $where)');
      } },
    (map {
        my ($method, $what, $value, $shown) = @$_;
        my $noun = $method eq 'add_handle' ? 'watch' : 'timer';
        { name   => "$method method returns $what",
          code   => sub {
              local $loop->{override}{$method} = sub { $value };
              $method eq 'add_handle'
                  ? Sys::Virt::Event::add_handle($PIPE_R, HANDLE_READABLE, sub { })
                  : Sys::Virt::Event::add_timeout(10, sub { });
          },
          expect => qr/^Sys::Virt::Event::$method: $method method of MisuseLoop returned '$shown', not a positive $noun id/,
          warns  => warning_re("$method method of MisuseLoop", "returned '$shown', not a positive $noun id\$") }
    } [ add_handle => 'undef', undef, 'undef' ],
      [ add_handle => '0', 0, '0' ],
      [ add_handle => '-5', -5, '-5' ],
      [ add_timeout => '"abc"', 'abc', 'abc' ],
      [ add_timeout => '3.5', 3.5, '3\.5' ],
      [ add_timeout => 'an array ref', [], 'an ARRAY reference' ]),
    { name   => 'add_handle method returns the id of a live watch',
      code   => sub {
          with_watch(sub {
              my ($id) = @_;
              local $loop->{override}{add_handle} = sub { $id };
              Sys::Virt::Event::add_handle($PIPE_R, HANDLE_READABLE, sub { });
          });
      },
      expect => qr/^Sys::Virt::Event::add_handle: add_handle method of MisuseLoop returned watch \d+, which is already in use/,
      warns  => warning_re('add_handle method of MisuseLoop', 'returned watch \d+, which is already in use$') },
    { name   => 'update_handle method dies',
      code   => sub {
          my $fired = 0;
          with_watch(sub {
              my ($id, $h, $w) = @_;
              {
                  local $loop->{override}{update_handle} = sub { die "not today\n" };
                  Sys::Virt::Event::update_handle($id, 0);
              }
              syswrite $w, 'x';
              $loop->run_until(sub { $fired }, 2);
              return ($h->{events}, $fired);
          }, cb => sub { $fired++ });
      },
      expect => 'update_handle returns (libvirt expects nothing); the watch keeps working',
      warns  => warning_re('update_handle method of MisuseLoop', 'not today$'),
      check  => sub {
          is($_[0], HANDLE_READABLE, 'the mask is unchanged');
          ok($_[1], 'the watch still fires');
      } },
    { name   => 'update_timeout method dies',
      code   => sub {
          my $fired = 0;
          with_timer(sub {
              {
                  local $loop->{override}{update_timeout} = sub { die "not today\n" };
                  Sys::Virt::Event::update_timeout($_[0], -1);
              }
              $loop->run_until(sub { $fired }, 2);
          }, ms => 0, cb => sub { $fired++ });
          return $fired;
      },
      expect => 'update_timeout returns; the timer keeps working',
      warns  => warning_re('update_timeout method of MisuseLoop', 'not today$'),
      check  => sub { ok($_[0], 'the timer still fires') } },
    (map {
        my ($method, $table, $noun) = @$_;
        { name   => "$method method dies",
          code   => sub {
              my $released = 0;
              my ($r, $w) = new_pipe();
              my $id = $method eq 'remove_handle'
                  ? Sys::Virt::Event::add_handle($r, HANDLE_READABLE, counted_cb(\$released))
                  : Sys::Virt::Event::add_timeout(-1, counted_cb(\$released));
              my $remove = \&{"Sys::Virt::Event::$method"};
              my $err = do {
                  local $loop->{override}{$method} = sub { die "not today\n" };
                  eval { $remove->($id); '' } // $@;
              };
              my $again = eval { $remove->($id); '' } // $@;
              delete $loop->{$table}{$id};      # the loop gives up its entry
              with_timer(sub { });               # the next public calls
              return ($err, $again, $released);
          },
          expect => 'croaks saying the method died; the id is gone; the coderef is released once the loop lets go',
          warns  => warning_re("$method method of MisuseLoop", 'not today$'),
          check  => sub {
              like($_[0], qr/^Sys::Virt::Event::$method: $method method of MisuseLoop died: not today/, 'the remove croaked');
              like($_[1], qr/^Sys::Virt::Event::$method: $noun \d+ is not a live $noun/, 'the id is no longer live');
              is($_[2], 1, 'the coderef was released once');
          } }
    } [ remove_handle => handles => 'watch' ], [ remove_timeout => timeouts => 'timer' ]),
    { name   => 'remove_timeout method returns -1',
      code   => sub {
          my $fired = 0;
          my $id = Sys::Virt::Event::add_timeout(0, sub { $fired++ });
          my $err = do {
              local $loop->{override}{remove_timeout} = sub { -1 };
              eval { Sys::Virt::Event::remove_timeout($id); '' } // $@;
          };
          my $t = $loop->{timeouts}{$id};
          $loop->_run_timeout_callback($id, $t->{cb}, $t->{opaque});   # the loop kept it
          delete $loop->{timeouts}{$id};
          with_timer(sub { });
          return ($err, $fired);
      },
      expect => 'libvirt gets -1, so the public call croaks; the kept timer is never dispatched',
      check  => sub {
          like($_[0], qr/^Sys::Virt::Event::remove_timeout: remove_timeout method of MisuseLoop returned -1/, 'croaked with the reason');
          is($_[1], 0, 'dispatching the kept timer is a no-op');
      } },
    { name   => 'add_timeout method dies below libvirt\'s own call (domain event registration)',
      needs  => 'Sys::Virt',
      code   => sub {
          my $conn = Sys::Virt->new(uri => 'test:///default');
          local $loop->{override}{add_timeout} = sub { die "not today\n" };
          $conn->domain_event_register_any(undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE(), sub { });
      },
      expect => qr/could not initialize domain event timer/,
      warns  => warning_re('add_timeout method of MisuseLoop', 'not today$') },

    '--- user callbacks that die, and the error hook',
    { name   => 'a watch callback dies',
      code   => sub {
          my $n = 0;
          with_watch(sub {
              syswrite $_[2], 'x';
              $loop->run_until(sub { $n >= 2 }, 2);
          }, cb => sub { $n++; die "watch oops\n" });
          return $n;
      },
      expect => 'warns, and the loop keeps dispatching it',
      warns  => warning_re('callback of watch \d+', 'watch oops$'),
      check  => sub { is($_[0], 2, 'fired again after dying') } },
    { name   => 'a timer callback dies, with $DIED set',
      code   => sub {
          my @reported;
          local $Sys::Virt::Event::DIED = sub { push @reported, [@_] };
          my $id = with_timer(sub {
              $loop->run_until(sub { @reported >= 2 }, 2);
              return $_[0];
          }, ms => 0, cb => sub { die "timer oops\n" });
          return ($id, \@reported);
      },
      expect => '$DIED gets ($error, "callback of timer N") each time; no warning',
      check  => sub {
          my ($id, $reported) = @_;
          is_deeply($reported->[0], [ "timer oops\n", "callback of timer $id" ], '($error, $where)');
          is(scalar(@$reported), 2, 'reported each time it died');
      } },
    { name   => 'a callback dies with an exception object',
      code   => sub {
          my @reported;
          local $Sys::Virt::Event::DIED = sub { push @reported, $_[0] };
          with_timer(sub { $loop->run_until(sub { @reported }, 2) },
                     ms => 0, cb => sub { die bless({ code => 7 }, 'Misuse::Error') });
          return $reported[0];
      },
      expect => '$DIED gets the object itself',
      check  => sub {
          isa_ok($_[0], 'Misuse::Error');
          is(eval { $_[0]{code} }, 7, 'with its contents');
      } },
    { name   => 'a callback misuses the API (removes its own timer twice)',
      code   => sub {
          my $removed = 0;
          Sys::Virt::Event::add_timeout(0, sub {
              Sys::Virt::Event::remove_timeout($_[0]);
              $removed++;
              Sys::Virt::Event::remove_timeout($_[0]);
          });
          $loop->run_until(sub { $removed }, 2);
          return $removed;
      },
      expect => 'the croak inside the callback is reported, not thrown through libvirt',
      warns  => warning_re('callback of timer \d+', 'Sys::Virt::Event::remove_timeout: timer \d+ is not a live timer'),
      check  => sub { is($_[0], 1, 'the first remove worked') } },
    { name   => '$DIED itself dies',
      child  => 1,
      code   => sub {
          local $Sys::Virt::Event::DIED = sub { die "the hook broke\n" };
          my $n = 0;
          with_timer(sub { $loop->run_until(sub { $n >= 2 }, 2) },
                     ms => 0, cb => sub { $n++; die "first\n" });
          print "still running after $n\n";
      },
      expect => 'both errors go to STDERR; the loop goes on',
      check  => sub {
          like($_[0]{output}, qr/Sys::Virt::Event: callback of timer \d+(?: died)?: first\s*\(and reporting it failed: the hook broke/, 'both errors printed');
          like($_[0]{output}, qr/^still running after 2$/m, 'the loop went on');
      } },
    { name   => '$SIG{__WARN__} dies while a callback error is reported',
      child  => 1,
      code   => sub {
          local $SIG{__WARN__} = sub { die "warn handler broke\n" };
          my $n = 0;
          with_timer(sub { $loop->run_until(sub { $n >= 2 }, 2) },
                     ms => 0, cb => sub { $n++; die "second\n" });
          print "still running after $n\n";
      },
      expect => 'the error goes to STDERR; the loop goes on',
      check  => sub {
          like($_[0]{output}, qr/Sys::Virt::Event: callback of timer \d+(?: died)?: second\s*\(and reporting it failed: warn handler broke/, 'both errors printed');
          like($_[0]{output}, qr/^still running after 2$/m, 'the loop went on');
      } },
    { name   => '$DIED set to something that is not a code reference',
      child  => 1,
      code   => sub {
          local $Sys::Virt::Event::DIED = { log => 'here' };
          local $SIG{__WARN__} = sub { print "warned: $_[0]" };
          my $n = 0;
          with_timer(sub { $loop->run_until(sub { $n }, 2) },
                     ms => 0, cb => sub { $n++; die "plain\n" });
      },
      expect => 'only a code reference replaces the default: the error is warned as usual',
      check  => sub {
          like($_[0]{output}, qr/^warned: Sys::Virt::Event: callback of timer \d+(?: died)?: plain$/m, 'reported with warn');
          unlike($_[0]{output}, qr/reporting it failed/, 'not treated as a broken hook');
      } },

    '--- threads (each in a child)',
    { name   => 'a public call from another thread',
      child  => 1, needs => 'threads',
      code   => sub {
          require threads;
          my $err = threads->create(sub { eval { Sys::Virt::Event::add_timeout(10, sub { }) }; $@ })->join;
          print "thread: $err";
      },
      expect => 'croaks in that thread',
      check  => sub { like($_[0]{output}, qr/^thread: Sys::Virt::Event::add_timeout: called from a thread other than the one that registered the event loop/m) } },
    { name   => 'handles a new thread inherited, given to a helper',
      child  => 1, needs => 'threads',
      code   => sub {
          require threads;
          with_timer(sub {
              my ($id, $t) = @_;
              my $err = threads->create(sub {
                  eval { $loop->_run_timeout_callback($id, $t->{cb}, $t->{opaque}) }; $@;
              })->join;
              print "thread: $err";
          });
      },
      expect => 'croaks in that thread',
      check  => sub { like($_[0]{output}, qr/^thread: Sys::Virt::Event::_run_timeout_callback: \$cb belongs to another thread's event loop/m) } },
    { name   => 'register from another thread',
      child  => 1, needs => 'threads',
      code   => sub {
          require threads;
          my $err = threads->create(sub { eval { MisuseLoop->new->register }; $@ })->join;
          print "thread: $err";
      },
      expect => 'croaks in that thread',
      check  => sub { like($_[0]{output}, qr/^thread: Sys::Virt::Event::register: another thread already registered an event loop/m) } },
);

# ---------------------------------------------------------------- runner

my %have = (
    'Sys::Virt' => have_sys_virt(),
    threads     => $Config{useithreads} ? 1 : 0,
);
my $FILE = __FILE__;

# After a row that left something behind: start the next one clean.
sub reset_loop {
    eval { Sys::Virt::Event::remove_handle($_) } for keys %{ $loop->{handles} };
    eval { Sys::Virt::Event::remove_timeout($_) } for keys %{ $loop->{timeouts} };
    %{ $loop->{handles} } = ();
    %{ $loop->{timeouts} } = ();
    @{ $loop->{later} } = ();
}

sub check_croak {
    my ($row, $err) = @_;
    like($err, $row->{expect}, 'croaks naming the function and the problem');
    # our own croaks point at the caller's line, not into the module
    like($err, qr/ at \Q$FILE\E line \d+\.?\n?\z/, 'at the caller\'s line')
        if $err =~ /^(?:Sys::Virt::Event::|Usage: )/;
}

sub run_here {
    my ($row) = @_;
    my (@got, @warnings);
    my $ok = do {
        local $SIG{__WARN__} = sub { push @warnings, $_[0] };
        eval { @got = $row->{code}->(); 1 };
    };
    my $err = $ok ? '' : $@;
    if (ref $row->{expect} eq 'Regexp') {
        check_croak($row, $err);
    } elsif (is($err, '', "does not croak: $row->{expect}")) {
        $row->{check}->(@got);
    }
    if ($row->{warns}) {
        ok(@warnings > 0, 'warns');
        like($_, $row->{warns}, 'the warning says where and why') for @warnings;
    } else {
        is_deeply(\@warnings, [], 'no warnings');
    }
    $loop->{override} = {};
    ok($loop->idle, 'nothing left registered in the loop') or reset_loop();
}

sub run_in_child {
    my ($row) = @_;
    my $res = in_child(sub { local $SIG{__WARN__}; $row->{code}->() },
                       timeout => $row->{timeout} || 10);
    ok(!$res->{timed_out}, 'finishes within its time limit');
    is($res->{signal}, 0, 'is not killed by a signal');
    if (ref $row->{expect} eq 'Regexp') {
        is($res->{exit}, 1, 'dies');
        my ($died) = $res->{output} =~ /^died: (.*)/ms;
        check_croak($row, $died // '');
    } elsif (is($res->{exit}, 0, "exits normally: $row->{expect}")) {
        $row->{check}->($res);
    } else {
        diag($res->{output});
    }
}

my ($ran, $in_child, $skipped) = (0, 0, 0);
for my $row (@ROWS) {
    if (!ref $row) {
        note($row);
        next;
    }
    if ($row->{needs} && !$have{ $row->{needs} }) {
        SKIP: { skip("$row->{name}: needs $row->{needs}", 1) }
        $skipped++;
        next;
    }
    $ran++;
    $in_child++ if $row->{child};
    subtest($row->{name} => sub { $row->{child} ? run_in_child($row) : run_here($row) });
}

ok($loop->idle, 'at the end, nothing is left registered in the loop');
is_deeply($loop->{later}, [], 'and no free is waiting in it');
diag("$ran table rows ran ($in_child in child processes), $skipped skipped");

done_testing();

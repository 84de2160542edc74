#!/usr/bin/perl
#
# Registration rules.  libvirt accepts one event loop per process, so every
# case runs in a child process of its own, under a time limit.  A child
# prints "name=value" lines; the parent parses and checks them.

use strict;
use warnings;

use FindBin ();
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes ();

use Sys::Virt::Event;
use Sys::Virt::EventImpl;
use TestLoop;
use TestUtil qw(in_child child_case error_of);

my @IMPL_METHODS = qw(add_handle update_handle remove_handle
                      add_timeout update_timeout remove_timeout);
my $FILE = __FILE__;

# Run $code in a child; check that it ended normally and in time, and
# return its output as a hash of the "name=value" lines (a name printed
# twice keeps the last value) plus the raw text under "".


# Runs the loop until the public timer it was given fires, and reports
# what the implementation saw.
sub timer_fires {
    my ($loop) = @_;
    my $fired = 0;
    my $timer = Sys::Virt::Event::add_timeout(10, sub { $fired++ });
    $loop->run_until(sub { $fired }, 5);
    Sys::Virt::Event::remove_timeout($timer);
    $loop->run_once(0);
    return $fired;
}

sub add_timeout_calls {
    my ($loop) = @_;
    return scalar grep { $_->[0] eq 'add_timeout' } @{$loop->{calls}};
}

# An implementation written against the newer base-class name: it keeps
# its timers in a hash and leaves dispatching to the test.
{
    package ImplLoop;
    our @ISA = ('Sys::Virt::EventImpl');

    sub new { return bless { timers => {}, next => 1, calls => [] }, shift }
    sub add_handle     { push @{$_[0]{calls}}, 'add_handle'; return -1 }
    sub update_handle  { push @{$_[0]{calls}}, 'update_handle'; return }
    sub remove_handle  { push @{$_[0]{calls}}, 'remove_handle'; return -1 }
    sub add_timeout {
        my ($self, $ms, $cb, $opaque, $ff) = @_;
        push @{$self->{calls}}, 'add_timeout';
        my $id = $self->{next}++;
        $self->{timers}{$id} = [$cb, $opaque, $ff];
        return $id;
    }
    sub update_timeout { push @{$_[0]{calls}}, 'update_timeout'; return }
    sub remove_timeout {
        my ($self, $id) = @_;
        push @{$self->{calls}}, 'remove_timeout';
        my $t = delete $self->{timers}{$id} or return -1;
        $self->_free_callback_opaque($t->[2], $t->[1]);
        return 0;
    }

    # Lacks four of the six methods.
    package HalfImpl;
    our @ISA = ('Sys::Virt::EventImpl');
    sub new { return bless {}, shift }
    sub add_handle    { return 1 }
    sub remove_handle { return 0 }

    # The older base class: its public functions of the same names must
    # not count as implementations.
    package HalfEvent;
    our @ISA = ('Sys::Virt::Event');
    sub new { return bless {}, shift }
    sub add_timeout    { return 1 }
    sub update_timeout { return }
    sub remove_timeout { return 0 }

    # Inherits only the abstract stubs.
    package EmptyImpl;
    our @ISA = ('Sys::Virt::EventImpl');
    sub new { return bless {}, shift }

    package NotALoop;
    sub new { return bless {}, shift }
}

# ---------------------------------------------------------------------
# before anything is registered

{
    my $out = child_case('public functions before registration', sub {
        my %args = (
            add_handle     => [0, Sys::Virt::Event::HANDLE_READABLE(), sub { }],
            update_handle  => [1, Sys::Virt::Event::HANDLE_READABLE()],
            remove_handle  => [1],
            add_timeout    => [10, sub { }],
            update_timeout => [1, 10],
            remove_timeout => [1],
        );
        for my $f (@IMPL_METHODS) {
            no strict 'refs';
            print "$f=", error_of { &{"Sys::Virt::Event::$f"}(@{$args{$f}}) }, "\n";
        }
    });
    for my $f (@IMPL_METHODS) {
        like($out->{$f}, qr/^Sys::Virt::Event::\Q$f\E: no event loop is registered/,
             "$f before registration croaks, naming the function");
        like($out->{$f}, qr/register_default\(\) or register\(\$impl\)/,
             "$f before registration says how to register");
    }
}

{
    my $out = child_case('run_default with nothing registered', sub {
        my $t0 = Time::HiRes::time();
        my $err = error_of { Sys::Virt::Event::run_default() };
        printf "seconds=%.3f\n", Time::HiRes::time() - $t0;
        print "err=$err\n";
    }, timeout => 10);
    like($out->{err}, qr/^Sys::Virt::Event::run_default: the default event loop is not registered/,
         'run_default with nothing registered croaks');
    cmp_ok($out->{seconds}, '<', 2, 'run_default with nothing registered does not block');
}

# ---------------------------------------------------------------------
# register($impl)

{
    my $out = child_case('register as a function', sub {
        my $loop = TestLoop->new;
        print "err=", error_of { Sys::Virt::Event::register($loop) }, "\n";
        print "fired=", timer_fires($loop), "\n";
        print "adds=", add_timeout_calls($loop), "\n";
    });
    is($out->{err}, '', 'register($impl) as a function is accepted');
    is($out->{fired}, 1, 'libvirt calls the function-registered loop: a public timer fires');
    is($out->{adds}, 1, 'the loop saw the add_timeout');
}

{
    my $out = child_case('register as a method', sub {
        my $loop = TestLoop->new;
        my @ret = ('unset');
        print "err=", error_of { @ret = $loop->register }, "\n";
        print "ret=", scalar(@ret), "\n";
        print "fired=", timer_fires($loop), "\n";
        print "adds=", add_timeout_calls($loop), "\n";
    });
    is($out->{err}, '', '$impl->register is accepted');
    is($out->{ret}, 0, 'register returns nothing');
    is($out->{fired}, 1, 'libvirt calls the method-registered loop: a public timer fires');
    is($out->{adds}, 1, 'the loop saw the add_timeout');
}

{
    my $out = child_case('same object twice', sub {
        my $loop = TestLoop->new;
        $loop->register;
        print "again_fn=", error_of { Sys::Virt::Event::register($loop) }, "\n";
        print "again_method=", error_of { $loop->register }, "\n";
        print "fired=", timer_fires($loop), "\n";
        print "adds=", add_timeout_calls($loop), "\n";
        print "idle=", ($loop->idle ? 1 : 0), "\n";
    });
    is($out->{again_fn}, '', 'registering the same object again as a function is a no-op');
    is($out->{again_method}, '', 'registering the same object again as a method is a no-op');
    is($out->{fired}, 1, 'the loop still works after the repeated registrations');
    is($out->{adds}, 1, 'one public add reaches the loop once');
    is($out->{idle}, 1, 'nothing is left registered in the loop');
}

{
    my $out = child_case('a different implementation', sub {
        my $loop = TestLoop->new;
        $loop->register;
        my $line = __LINE__ + 1;
        print "other_fn=", error_of { Sys::Virt::Event::register(TestLoop->new) }, "\n";
        print "other_fn_line=$line\n";
        print "other_method=", error_of { ImplLoop->new->register }, "\n";
        print "fired=", timer_fires($loop), "\n";
    });
    like($out->{other_fn}, qr/^Sys::Virt::Event::register: an event loop \(TestLoop\) is already registered/,
         'another object of the same class croaks, naming the registered class');
    like($out->{other_fn}, qr/one loop per process/, 'the message says why');
    like($out->{other_fn}, qr/ at \Q$FILE\E line \Q$out->{other_fn_line}\E\.?\z/,
         "the croak is reported at the caller's line, not inside the module");
    like($out->{other_method}, qr/^Sys::Virt::Event::register: an event loop \(TestLoop\) is already registered/,
         'an object of another class croaks too');
    is($out->{fired}, 1, 'the first loop stays in effect after the refused registrations');
}

{
    my $out = child_case('register after register_default', sub {
        Sys::Virt::Event::register_default();
        print "err=", error_of { TestLoop->new->register }, "\n";
        print "err_fn=", error_of { Sys::Virt::Event::register(TestLoop->new) }, "\n";
        # the default loop is still the one in effect
        my $fired = 0;
        my $timer = Sys::Virt::Event::add_timeout(0, sub { $fired++ });
        for (1 .. 5) { Sys::Virt::Event::run_default(); last if $fired }
        Sys::Virt::Event::remove_timeout($timer);
        print "fired=$fired\n";
    });
    like($out->{err}, qr/^Sys::Virt::Event::register: libvirt's default event loop is already registered/,
         'register($impl) after register_default croaks');
    like($out->{err_fn}, qr/^Sys::Virt::Event::register: libvirt's default event loop is already registered/,
         'register($impl) as a function after register_default croaks');
    cmp_ok($out->{fired}, '>=', 1, 'the default loop stays in effect');
}

{
    my $out = child_case('register_default after register', sub {
        my $loop = TestLoop->new;
        $loop->register;
        print "err=", error_of { Sys::Virt::Event::register_default() }, "\n";
        print "run=", error_of { Sys::Virt::Event::run_default() }, "\n";
        print "fired=", timer_fires($loop), "\n";
    }, timeout => 10);
    like($out->{err}, qr/^Sys::Virt::Event::register_default: a Perl event loop is already registered/,
         'register_default after register croaks');
    like($out->{run}, qr/^Sys::Virt::Event::run_default: the default event loop is not registered/,
         'run_default with a Perl loop registered croaks instead of blocking');
    is($out->{fired}, 1, 'the Perl loop stays in effect');
}

{
    my $out = child_case('register_default twice', sub {
        print "first=", error_of { Sys::Virt::Event::register_default() }, "\n";
        print "second=", error_of { Sys::Virt::Event::register_default() }, "\n";
        my $fired = 0;
        my $timer = Sys::Virt::Event::add_timeout(10, sub { $fired++ });
        my $t0 = Time::HiRes::time();
        while (!$fired && Time::HiRes::time() - $t0 < 5) {
            Sys::Virt::Event::run_default();
        }
        Sys::Virt::Event::remove_timeout($timer);
        print "fired=$fired\n";
    });
    is($out->{first}, '', 'register_default succeeds');
    is($out->{second}, '', 'register_default a second time is a no-op');
    cmp_ok($out->{fired}, '>=', 1, 'run_default dispatches a public timer');
}

# ---------------------------------------------------------------------
# Sys::Virt::EventImpl

{
    my $out = child_case('abstract methods of Sys::Virt::EventImpl', sub {
        my $empty = EmptyImpl->new;
        for my $m (@IMPL_METHODS) {
            print "class_$m=", error_of { Sys::Virt::EventImpl->$m() }, "\n";
            print "obj_$m=", error_of { $empty->$m(1, 2) }, "\n";
        }
        print "register=", error_of { $empty->register }, "\n";
    });
    for my $m (@IMPL_METHODS) {
        like($out->{"class_$m"}, qr/^Sys::Virt::EventImpl must provide the \Q$m\E method/,
             "Sys::Virt::EventImpl->$m croaks 'must provide'");
        like($out->{"obj_$m"}, qr/^EmptyImpl must provide the \Q$m\E method/,
             "an inherited abstract $m croaks, naming the subclass");
    }
    like($out->{register}, qr/^Sys::Virt::Event::register: EmptyImpl does not implement \Q@{[join ', ', @IMPL_METHODS]}\E/,
         'a subclass with only the abstract stubs is refused, all six listed');
}

{
    my $out = child_case('incomplete subclasses', sub {
        print "half_impl=", error_of { HalfImpl->new->register }, "\n";
        print "half_event=", error_of { Sys::Virt::Event::register(HalfEvent->new) }, "\n";
        print "not_a_loop=", error_of { Sys::Virt::Event::register(NotALoop->new) }, "\n";
        print "unblessed=", error_of { Sys::Virt::Event::register({}) }, "\n";
        print "class_name=", error_of { Sys::Virt::Event::register('TestLoop') }, "\n";
        print "undef=", error_of { Sys::Virt::Event::register(undef) }, "\n";
        # none of the refusals registered anything
        print "later=", error_of { Sys::Virt::Event::add_timeout(10, sub { }) }, "\n";
        my $loop = TestLoop->new;
        print "complete=", error_of { $loop->register }, "\n";
        print "fired=", timer_fires($loop), "\n";
    });
    like($out->{half_impl},
         qr/^Sys::Virt::Event::register: HalfImpl does not implement update_handle, add_timeout, update_timeout, remove_timeout\b/,
         'an EventImpl subclass missing methods is refused, listing them');
    like($out->{half_event},
         qr/^Sys::Virt::Event::register: HalfEvent does not implement add_handle, update_handle, remove_handle\b/,
         "a Sys::Virt::Event subclass missing methods is refused: the module's public functions do not count");
    for my $case (qw(not_a_loop unblessed class_name undef)) {
        like($out->{$case}, qr/^Sys::Virt::Event::register: the implementation must be an object of a subclass of Sys::Virt::Event/,
             "register refuses a non-implementation ($case)");
    }
    like($out->{later}, qr/no event loop is registered/, 'a refused registration registers nothing');
    is($out->{complete}, '', 'a complete implementation can register after the refusals');
    is($out->{fired}, 1, 'and libvirt calls it');
}

{
    my $out = child_case('an EventImpl subclass', sub {
        my $impl = ImplLoop->new;
        print "err=", error_of { Sys::Virt::Event::register($impl) }, "\n";
        my $fired = 0;
        my $timer = Sys::Virt::Event::add_timeout(10, sub { $fired++ });
        my $t = $impl->{timers}{$timer};
        print "have_timer=", ($t ? 1 : 0), "\n";
        print "dispatch=", error_of { $impl->_run_timeout_callback($timer, $t->[0], $t->[1]) }, "\n";
        print "fired=$fired\n";
        Sys::Virt::Event::remove_timeout($timer);
        print "calls=@{$impl->{calls}}\n";
        print "left=", scalar(keys %{$impl->{timers}}), "\n";
    });
    is($out->{err}, '', 'a complete Sys::Virt::EventImpl subclass is accepted');
    is($out->{have_timer}, 1, 'libvirt calls its add_timeout');
    is($out->{dispatch}, '', 'it inherits _run_timeout_callback');
    is($out->{fired}, 1, 'the dispatched timer runs the public callback');
    is($out->{calls}, 'add_timeout remove_timeout', 'libvirt called add_timeout and remove_timeout');
    is($out->{left}, 0, 'nothing is left registered in the implementation');
}

done_testing;

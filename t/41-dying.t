#!/usr/bin/perl
#
# Implementation methods and callbacks that die.  An exception must never
# unwind through libvirt: libvirt gets the answer it expects, the error is
# reported (a warning, or the $Sys::Virt::Event::DIED hook), and the
# program carries on.  Each case runs in a child process of its own, under
# a time limit; a child prints "name=value" lines for the parent to check,
# and its warnings go to the captured STDERR.

use strict;
use warnings;

use FindBin ();
use lib "$FindBin::Bin/lib";

use Test::More;

use Sys::Virt::Event;
use TestLoop;
use TestUtil qw(in_child have_sys_virt child_case error_of);



sub count_of {
    my ($text, $re) = @_;
    my $n = () = $text =~ /$re/g;
    return $n;
}

# A TestLoop whose methods die on demand: $loop->{die}{METHOD} set to
# 'before' dies without doing anything, 'after' does the work first.
# $loop->{entered} lists every method libvirt called, dying or not.
{
    package DyingLoop;
    our @ISA = ('TestLoop');

    for my $m (qw(add_handle update_handle remove_handle
                  add_timeout update_timeout remove_timeout)) {
        no strict 'refs';
        my $super = \&{"TestLoop::$m"};
        *{$m} = sub {
            my $self = shift;
            push @{$self->{entered}}, $m;
            my $when = $self->{die}{$m} || '';
            die "$m exploded\n" if $when eq 'before';
            my @ret = $super->($self, @_);
            die "$m exploded\n" if $when eq 'after';
            return wantarray ? @ret : $ret[0];
        };
    }

    # add_handle and add_timeout answer $loop->{ret}{METHOD} when it
    # exists (a code reference computes it), without keeping anything.
    package ReturningLoop;
    our @ISA = ('TestLoop');

    sub add_handle {
        my $self = shift;
        return $self->SUPER::add_handle(@_) unless exists $self->{ret}{add_handle};
        my $r = $self->{ret}{add_handle};
        return ref $r eq 'CODE' ? $r->($self, @_) : $r;
    }

    sub add_timeout {
        my $self = shift;
        return $self->SUPER::add_timeout(@_) unless exists $self->{ret}{add_timeout};
        my $r = $self->{ret}{add_timeout};
        return ref $r eq 'CODE' ? $r->($self, @_) : $r;
    }
}

my $HAVE_SYS_VIRT = have_sys_virt();

# Opens test:///default with a lifecycle callback and returns the
# connection, the callback id and the list the events go to.
sub lifecycle_setup {
    my $conn = Sys::Virt->new(uri => 'test:///default');
    my @events;
    my $id = $conn->domain_event_register_any(
        undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE(),
        sub { push @events, [@_[2, 3]] });
    return ($conn, $id, \@events);
}

sub suspend_resume {
    my ($conn) = @_;
    my $dom = $conn->get_domain_by_name('test');
    $dom->suspend;
    $dom->resume;
    return;
}

# ---------------------------------------------------------------------
# dying implementation methods, called by libvirt itself

SKIP: {
    skip 'Sys::Virt is not installed', 1 unless $HAVE_SYS_VIRT;

    my $out = child_case('add_timeout dies under Sys::Virt', sub {
        my $loop = DyingLoop->new;
        $loop->{die}{add_timeout} = 'before';
        $loop->register;
        my $conn = Sys::Virt->new(uri => 'test:///default');
        my $cb = sub { };
        print "first=", error_of {
            $conn->domain_event_register_any(undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE(), $cb)
        }, "\n";
        print "second=", error_of {
            $conn->domain_event_register_any(undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE(), $cb)
        }, "\n";
        $loop->run_once(0);
        print "idle=", ($loop->idle ? 1 : 0), "\n";
        undef $conn;
        print "closed=1\n";
    });
    like($out->{first}, qr/libvirt error code: \d+, message: .*event timer/,
         "domain_event_register_any croaks with libvirt's own error");
    like($out->{second}, qr/libvirt error code/, 'a second attempt fails cleanly too');
    is($out->{idle}, 1, 'nothing is left registered in the loop');
    is($out->{closed}, 1, 'the process carries on and closes the connection');
    like($out->{''}, qr/^Sys::Virt::Event: add_timeout method of DyingLoop(?: died)?: add_timeout exploded$/m,
         'a warning names the method, the class and the error');
    is(count_of($out->{''}, qr/add_timeout exploded/), 2, 'one warning per failed call');
}

SKIP: {
    skip 'Sys::Virt is not installed', 1 unless $HAVE_SYS_VIRT;

    my $out = child_case('update_timeout dies', sub {
        my $loop = DyingLoop->new;
        $loop->{die}{update_timeout} = 'after';
        $loop->register;
        my ($conn, $id, $events) = lifecycle_setup();
        suspend_resume($conn);
        $loop->run_until(sub { @$events >= 2 }, 5);
        print "events=", scalar(@$events), "\n";
        print "updates=", scalar(grep { $_ eq 'update_timeout' } @{$loop->{entered}}), "\n";
        # and again: the loop is not left in a broken state
        suspend_resume($conn);
        $loop->run_until(sub { @$events >= 4 }, 5);
        print "events_again=", scalar(@$events), "\n";
        $conn->domain_event_deregister_any($id);
        $loop->run_once(0);
        print "idle=", ($loop->idle ? 1 : 0), "\n";
        undef $conn;
        print "closed=1\n";
    });
    is($out->{events}, 2, 'lifecycle events still flow when update_timeout dies');
    cmp_ok($out->{updates}, '>=', 1, 'libvirt did call update_timeout');
    is($out->{events_again}, 4, 'and keep flowing afterwards');
    is($out->{idle}, 1, 'nothing is left registered after deregistering');
    is($out->{closed}, 1, 'the connection closes');
    like($out->{''}, qr/^Sys::Virt::Event: update_timeout method of DyingLoop(?: died)?: update_timeout exploded$/m,
         'a warning names the method, the class and the error');
}

SKIP: {
    skip 'Sys::Virt is not installed', 1 unless $HAVE_SYS_VIRT;

    my $out = child_case('remove_timeout dies', sub {
        my $loop = DyingLoop->new;
        $loop->{die}{remove_timeout} = 'before';
        $loop->register;
        my ($conn, $id, $events) = lifecycle_setup();
        suspend_resume($conn);
        $loop->run_until(sub { @$events >= 2 }, 5);
        print "events=", scalar(@$events), "\n";
        # the last callback going makes libvirt remove its event timer
        print "deregister=", error_of { $conn->domain_event_deregister_any($id) }, "\n";
        print "removes=", scalar(grep { $_ eq 'remove_timeout' } @{$loop->{entered}}), "\n";
        # libvirt considers the timer gone: dispatching it is a no-op
        my ($stale) = values %{$loop->{timeouts}};
        if ($stale) {
            print "stale_dispatch=", error_of {
                $loop->_run_timeout_callback($stale->{timer}, $stale->{cb}, $stale->{opaque})
            }, "\n";
            print "stale_free=", error_of {
                $loop->_free_callback_opaque($stale->{ff}, $stale->{opaque})
            }, "\n";
            delete $loop->{timeouts}{$stale->{timer}};
        }
        # a new registration gets a working timer again
        delete $loop->{die}{remove_timeout};
        my @more;
        my $id2 = $conn->domain_event_register_any(
            undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE(), sub { push @more, 1 });
        suspend_resume($conn);
        $loop->run_until(sub { @more >= 2 }, 5);
        print "events_after=", scalar(@more), "\n";
        $conn->domain_event_deregister_any($id2);
        undef $conn;
        print "closed=1\n";
        $loop->run_once(0);
        print "idle=", ($loop->idle ? 1 : 0), "\n";
    });
    is($out->{events}, 2, 'events flowed before the removal');
    is($out->{deregister}, '', 'deregistering the callback succeeds although remove_timeout died');
    is($out->{removes}, 1, 'libvirt called remove_timeout');
    is($out->{stale_dispatch}, '', 'the timer whose removal died is skipped when dispatched');
    is($out->{stale_free}, '', 'and can be freed');
    is($out->{events_after}, 2, 'a later registration works');
    is($out->{closed}, 1, 'the connection close completes');
    is($out->{idle}, 1, 'nothing is left registered');
    like($out->{''}, qr/^Sys::Virt::Event: remove_timeout method of DyingLoop(?: died)?: remove_timeout exploded$/m,
         'a warning names the method, the class and the error');
}

# ---------------------------------------------------------------------
# dying implementation methods under the public functions

{
    my $out = child_case('public add whose implementation dies', sub {
        my $loop = DyingLoop->new;
        $loop->{die}{add_handle} = 'before';
        $loop->{die}{add_timeout} = 'before';
        $loop->register;
        pipe(my $r, my $w) or die "pipe: $!";
        print "add_handle=", error_of {
            Sys::Virt::Event::add_handle($r, Sys::Virt::Event::HANDLE_READABLE(), sub { })
        }, "\n";
        print "add_timeout=", error_of { Sys::Virt::Event::add_timeout(10, sub { }) }, "\n";
        print "idle=", ($loop->idle ? 1 : 0), "\n";
        # once the implementation behaves, the public calls work again
        delete $loop->{die}{add_timeout};
        my $fired = 0;
        my $t = Sys::Virt::Event::add_timeout(10, sub { $fired++ });
        $loop->run_until(sub { $fired }, 5);
        print "fired=$fired\n";
        # a dying remove makes the public remove croak with the reason
        $loop->{die}{remove_timeout} = 'before';
        print "remove=", error_of { Sys::Virt::Event::remove_timeout($t) }, "\n";
        my $before = $fired;
        $loop->run_once(30);
        print "fired_after_remove=", $fired - $before, "\n";
        print "remove_again=", error_of { Sys::Virt::Event::remove_timeout($t) }, "\n";
    });
    like($out->{add_handle},
         qr/^Sys::Virt::Event::add_handle: add_handle method of DyingLoop died: add_handle exploded/,
         'public add_handle croaks with the reason its implementation died');
    like($out->{add_timeout},
         qr/^Sys::Virt::Event::add_timeout: add_timeout method of DyingLoop died: add_timeout exploded/,
         'public add_timeout croaks with the reason its implementation died');
    is($out->{idle}, 1, 'the failed adds left nothing registered');
    is($out->{fired}, 1, 'public calls work once the implementation behaves');
    like($out->{remove},
         qr/^Sys::Virt::Event::remove_timeout: remove_timeout method of DyingLoop died: remove_timeout exploded/,
         'public remove_timeout croaks with the reason its implementation died');
    is($out->{fired_after_remove}, 0, 'the timer does not fire after its removal');
    like($out->{remove_again}, qr/^Sys::Virt::Event::remove_timeout: timer \d+ is not a live timer/,
         'it is gone: removing it again croaks');
}

{
    my $out = child_case('implementation add returning garbage', sub {
        my $loop = ReturningLoop->new;
        $loop->register;
        pipe(my $r, my $w) or die "pipe: $!";
        my $rd = Sys::Virt::Event::HANDLE_READABLE();
        my %cases = (undef => undef, zero => 0, minus => -1, abc => 'abc',
                     fraction => 2.5, ref => []);
        for my $case (sort keys %cases) {
            $loop->{ret}{add_handle} = $cases{$case};
            print "handle_$case=", error_of { Sys::Virt::Event::add_handle($r, $rd, sub { }) }, "\n";
            $loop->{ret}{add_timeout} = $cases{$case};
            print "timer_$case=", error_of { Sys::Virt::Event::add_timeout(10, sub { }) }, "\n";
        }
        # a duplicate of a live id
        delete $loop->{ret};
        my $w1 = Sys::Virt::Event::add_handle($r, $rd, sub { });
        my $t1 = Sys::Virt::Event::add_timeout(-1, sub { });
        $loop->{ret}{add_handle} = $w1;
        $loop->{ret}{add_timeout} = $t1;
        print "dup_handle=", error_of { Sys::Virt::Event::add_handle($r, $rd, sub { }) }, "\n";
        print "dup_timer=", error_of { Sys::Virt::Event::add_timeout(10, sub { }) }, "\n";
        print "dup_ids=$w1,$t1\n";
        delete $loop->{ret};
        Sys::Virt::Event::remove_handle($w1);
        Sys::Virt::Event::remove_timeout($t1);
        $loop->run_once(0);
        print "idle=", ($loop->idle ? 1 : 0), "\n";
    });
    my %shown = (undef => "'undef'", zero => "'0'", minus => "'-1'", abc => "'abc'",
                 fraction => "'2.5'", ref => "'an ARRAY reference'");
    for my $case (sort keys %shown) {
        like($out->{"handle_$case"},
             qr/^Sys::Virt::Event::add_handle: add_handle method of ReturningLoop returned \Q$shown{$case}\E.*not a positive watch id/,
             "add_handle returning $case: the public add croaks, saying what was returned");
        like($out->{"timer_$case"},
             qr/^Sys::Virt::Event::add_timeout: add_timeout method of ReturningLoop returned \Q$shown{$case}\E.*not a positive timer id/,
             "add_timeout returning $case: the public add croaks, saying what was returned");
    }
    my ($w1, $t1) = split /,/, $out->{dup_ids} // '';
    like($out->{dup_handle},
         qr/^Sys::Virt::Event::add_handle: add_handle method of ReturningLoop returned watch \Q$w1\E, which is already in use/,
         'add_handle returning a live id: the public add croaks');
    like($out->{dup_timer},
         qr/^Sys::Virt::Event::add_timeout: add_timeout method of ReturningLoop returned timer \Q$t1\E, which is already in use/,
         'add_timeout returning a live id: the public add croaks');
    is($out->{idle}, 1, 'nothing is left registered');
}

# ---------------------------------------------------------------------
# dying public callbacks, and the reporting of errors

{
    my $out = child_case('a public callback dies', sub {
        my $loop = TestLoop->new;
        $loop->register;
        pipe(my $r, my $w) or die "pipe: $!";
        syswrite($w, "x");
        my ($wcalls, $tcalls, $good) = (0, 0, 0);
        my $watch = Sys::Virt::Event::add_handle($r, Sys::Virt::Event::HANDLE_READABLE(),
                                                 sub { $wcalls++; die "watch callback exploded\n" });
        my $timer = Sys::Virt::Event::add_timeout(0, sub { $tcalls++; die "timer callback exploded\n" });
        my $other = Sys::Virt::Event::add_timeout(0, sub { $good++ });
        print "watch=$watch\ntimer=$timer\n";
        my $err = '';
        for (1 .. 3) {
            $err .= error_of { $loop->run_once(10) };
        }
        print "run_err=$err\n";
        print "wcalls=$wcalls\ntcalls=$tcalls\ngood=$good\n";
        Sys::Virt::Event::remove_handle($watch);
        Sys::Virt::Event::remove_timeout($timer);
        Sys::Virt::Event::remove_timeout($other);
        $loop->run_once(0);
        print "idle=", ($loop->idle ? 1 : 0), "\n";
    });
    is($out->{run_err}, '', 'the exceptions do not propagate out of the loop');
    is($out->{wcalls}, 3, 'the dying watch callback is dispatched on every iteration');
    is($out->{tcalls}, 3, 'the dying timer callback is dispatched on every iteration');
    is($out->{good}, 3, 'the other callbacks keep being dispatched');
    is($out->{idle}, 1, 'nothing is left registered');
    my ($watch, $timer) = ($out->{watch} // 'none', $out->{timer} // 'none');
    like($out->{''}, qr/^Sys::Virt::Event: callback of watch \Q$watch\E(?: died)?: watch callback exploded$/m,
         'a warning names the watch and the error');
    like($out->{''}, qr/^Sys::Virt::Event: callback of timer \Q$timer\E(?: died)?: timer callback exploded$/m,
         'a warning names the timer and the error');
    is(count_of($out->{''}, qr/watch callback exploded/), 3, 'one warning per dying call');
}

{
    my $out = child_case('$DIED receives the error', sub {
        my @got;
        $Sys::Virt::Event::DIED = sub { push @got, [@_] };
        my $loop = DyingLoop->new;
        $loop->register;
        my $timer = Sys::Virt::Event::add_timeout(0, sub { die { code => 42 } });
        print "run_err=", error_of { $loop->run_once(10) }, "\n";
        $loop->{die}{add_handle} = 'before';
        pipe(my $r, my $w) or die "pipe: $!";
        print "add_err=", error_of {
            Sys::Virt::Event::add_handle($r, Sys::Virt::Event::HANDLE_READABLE(), sub { })
        }, "\n";
        Sys::Virt::Event::remove_timeout($timer);
        print "hook_calls=", scalar(@got), "\n";
        print "first_args=", scalar(@{$got[0] || []}), "\n";
        print "first_error=", ref($got[0][0]) eq 'HASH' ? "HASH:$got[0][0]{code}" : ($got[0][0] // 'undef'), "\n";
        print "first_where=", $got[0][1] // 'undef', "\n";
        print "second_error=", $got[1][0] // 'undef', "\n";
        print "second_where=", $got[1][1] // 'undef', "\n";
        print "timer=$timer\n";
    });
    is($out->{run_err}, '', 'the exception does not propagate out of the loop');
    is($out->{hook_calls}, 2, '$DIED is called once per error');
    is($out->{first_args}, 2, '$DIED gets two arguments');
    is($out->{first_error}, 'HASH:42', '$DIED gets the exception itself, an object stays an object');
    is($out->{first_where}, "callback of timer $out->{timer}", '$DIED gets where it happened');
    is($out->{second_error}, 'add_handle exploded', '$DIED gets an implementation method\'s error');
    is($out->{second_where}, 'add_handle method of DyingLoop', 'and the method and class');
    like($out->{add_err}, qr/^Sys::Virt::Event::add_handle: .*add_handle exploded/,
         'the public add still croaks with the reason');
    unlike($out->{''}, qr/^Sys::Virt::Event: /m, 'nothing is warned when $DIED is set');
}

# A hook that dies while reporting: the report still reaches STDERR, the
# loop carries on.  [case, how the hook dies, what dies, whose error,
# whether each dying call is reported once]
for my $case (['$DIED itself dies',
               sub { $Sys::Virt::Event::DIED = sub { die "the hook exploded\n" } },
               'the hook', 'the hook\'s', 1],
              ['$SIG{__WARN__} dies',
               sub { $SIG{__WARN__} = sub { die "the warn handler exploded\n" } },
               'the warn handler', 'the handler\'s', 0]) {
    my ($name, $break, $what, $whose, $once) = @$case;
    my $out = child_case($name, sub {
        $break->();
        my $loop = TestLoop->new;
        $loop->register;
        my ($bad, $good) = (0, 0);
        my $t1 = Sys::Virt::Event::add_timeout(0, sub { $bad++; die "timer callback exploded\n" });
        my $t2 = Sys::Virt::Event::add_timeout(0, sub { $good++ });
        my $err = '';
        $err .= error_of { $loop->run_once(10) } for 1 .. 2;
        print "run_err=$err\n";
        print "bad=$bad\ngood=$good\n";
        print "alive=1\n";
    });
    is($out->{run_err}, '', 'nothing unwinds out of the loop');
    is($out->{bad}, 2, 'the dying callback keeps being dispatched');
    is($out->{good}, 2, 'the other callback too');
    is($out->{alive}, 1, 'the process carries on');
    like($out->{''}, qr/timer callback exploded.*\Q$what\E exploded/s,
         "the original error and $whose reach STDERR");
    like($out->{''}, qr/^Sys::Virt::Event: callback of timer \d+ died: timer callback exploded\b[^\n]*\Q$what\E exploded[^\n]*$/m,
         'as one line of text');
    is(count_of($out->{''}, qr/timer callback exploded/), 2, 'once per dying call')
        if $once;
}

SKIP: {
    skip 'Sys::Virt is not installed', 1 unless $HAVE_SYS_VIRT;

    # The report is made below libvirt's C frames here: if the dying
    # handler unwound, libvirt's locks and stack would be left behind.
    my $out = child_case('$SIG{__WARN__} dies below libvirt', sub {
        local $SIG{__WARN__} = sub { die "the warn handler exploded\n" };
        my $loop = DyingLoop->new;
        $loop->{die}{add_timeout} = 'before';
        $loop->register;
        my $conn = Sys::Virt->new(uri => 'test:///default');
        print "first=", error_of {
            $conn->domain_event_register_any(undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE(), sub { })
        }, "\n";
        # libvirt's locks were released: the connection is still usable
        delete $loop->{die}{add_timeout};
        my @events;
        my $id = $conn->domain_event_register_any(undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE(),
                                                  sub { push @events, 1 });
        suspend_resume($conn);
        $loop->run_until(sub { @events >= 2 }, 5);
        print "events=", scalar(@events), "\n";
        $conn->domain_event_deregister_any($id);
        undef $conn;
        print "closed=1\n";
    });
    like($out->{first}, qr/libvirt error code: \d+, message: .*event timer/,
         "Sys::Virt croaks with libvirt's error, not the handler's");
    is($out->{events}, 2, 'the connection works afterwards');
    is($out->{closed}, 1, 'and closes');
    like($out->{''}, qr/add_timeout exploded.*the warn handler exploded/s,
         'the original error and the handler\'s reach STDERR');
}

done_testing;

use strict;
use warnings;

# What is particular to the native loop, Sys::Virt::Event::EV: its
# registration beside the other loops, Perl's signal handlers and exit
# while EV's loop runs in C, callbacks that die, calls from another
# thread, a watch of only HANDLE_ERROR, frees left at program end, and
# its introspection.  The loop contract every loop keeps is in the
# conformance suite (t/lib/LoopConformance.pm).  Every case runs in a
# child of its own: libvirt takes one loop per process.

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Config;
use POSIX ();
use Time::HiRes ();
use TestUtil qw(in_child child_case error_of have_sys_virt report);

BEGIN {
    plan skip_all => 'EV is not installed' unless eval { require EV; 1 };
    plan skip_all => 'Sys::Virt::Event::EV is not built (EV was missing at configure time)'
        unless eval { require Sys::Virt::Event::EV; 1 };
}

use Sys::Virt::Event qw(:constants);

# Runs EV's loop until $cond is true or $seconds pass; true if it was.
sub ev_run_until {
    my ($cond, $seconds) = @_;
    my $done;
    my $limit = EV::timer($seconds, 0, sub { $done = 1 });
    my $poll = EV::timer(0.002, 0.002, sub { $done = 1 if $cond->() });
    EV::run(EV::RUN_ONCE()) until $done || $cond->();
    return $cond->() ? 1 : 0;
}

# -- registration --------------------------------------------------------------

{
    my $r = child_case('register', sub {
        my $loop = Sys::Virt::Event::EV->register;
        report(class => ref $loop,
               again => Sys::Virt::Event::EV->register == $loop ? 1 : 0,
               perl => error_of { require TestLoop; TestLoop->new->register },
               default => error_of { Sys::Virt::Event::register_default() },
               idle => $loop->is_idle ? 1 : 0);
    });
    is($r->{class}, 'Sys::Virt::Event::EV', 'register returns the loop object');
    is($r->{again}, 1, '... the same one when called again');
    like($r->{perl}, qr/^Sys::Virt::Event::register: the native EV loop \(Sys::Virt::Event::EV\) is already registered, and libvirt accepts one loop per process/,
         'a Perl loop after it is refused');
    like($r->{default}, qr/^Sys::Virt::Event::register_default: the native EV loop \(Sys::Virt::Event::EV\) is already registered/,
         "libvirt's default loop after it is refused");
    is($r->{idle}, 1, 'a new loop is idle');
}

for my $first (['a Perl loop', sub { require TestLoop; TestLoop->new->register }, qr/a Perl event loop is already registered/],
               ['the default loop', sub { Sys::Virt::Event::register_default() }, qr/libvirt's default event loop is already registered/]) {
    my ($name, $register, $expect) = @$first;
    my $r = child_case("register after $name", sub {
        $register->();
        report(error => error_of { Sys::Virt::Event::EV->register });
    });
    like($r->{error}, qr/^Sys::Virt::Event::EV::register: $expect/, "register after $name croaks");
}

# -- public watches and timers, introspection ----------------------------------------

{
    my $r = child_case('introspection', sub {
        my $loop = Sys::Virt::Event::EV->register;
        pipe(my $rd, my $wr) or die "pipe: $!";
        my $fired = 0;
        my $w = Sys::Virt::Event::add_handle($rd, HANDLE_READABLE, sub { $fired++ });
        my $t = Sys::Virt::Event::add_timeout(-1, sub { });
        my $z = Sys::Virt::Event::add_timeout(0, sub { });
        report(watches => join(',', $loop->watches), timers => join(',', $loop->timers),
               expect_watches => $w, expect_timers => join(',', sort { $a <=> $b } $t, $z),
               busy => $loop->is_idle ? 0 : 1,
               drain_zero => $loop->drain(0.2),
               bad_drain => error_of { $loop->drain('soon') });
        Sys::Virt::Event::remove_timeout($_) for $t, $z;
        Sys::Virt::Event::remove_handle($w);
        report(drained => $loop->drain(1), idle => $loop->is_idle ? 1 : 0,
               count => scalar($loop->watches) + scalar($loop->timers));
    });
    is($r->{watches}, $r->{expect_watches}, 'watches lists the live watch');
    is($r->{timers}, $r->{expect_timers}, 'timers lists the live timers, disabled ones too');
    is($r->{busy}, 1, 'is_idle is false while they live');
    is($r->{drain_zero}, 0, 'drain times out while a timer of interval 0 lives');
    like($r->{bad_drain}, qr/^Sys::Virt::Event::EV::drain: SECONDS must be a non-negative number, not 'soon'/,
         'drain refuses a bad argument by name');
    is($r->{drained}, 1, 'drain returns true once all is removed and freed');
    is($r->{idle}, 1, '... and the loop is idle');
    is($r->{count}, 0, '... with no watch or timer left');
}

{
    # libev cannot wait for an error alone: the watch waits for
    # readability and then sleeps, instead of waking the loop in a spin.
    my $r = child_case('a mask of only HANDLE_ERROR', sub {
        Sys::Virt::Event::EV->register;
        pipe(my $rd, my $wr) or die "pipe: $!";
        syswrite($wr, 'x');
        my $calls = 0;
        my $w = Sys::Virt::Event::add_handle($rd, HANDLE_ERROR, sub { $calls++ });
        my $iterations = 0;
        my $count = EV::check(sub { $iterations++ });
        my $done;
        my $limit = EV::timer(0.3, 0, sub { $done = 1 });
        EV::run(EV::RUN_ONCE()) until $done;
        report(calls => $calls, iterations => $iterations);
        Sys::Virt::Event::update_handle($w, HANDLE_READABLE);
        ev_run_until(sub { $calls }, 2);
        report(readable_calls => $calls);
    });
    is($r->{calls}, 0, 'readable without an error: no callback');
    cmp_ok($r->{iterations}, '<', 10, 'and no busy loop (loop iterations in 0.3 s)');
    cmp_ok($r->{readable_calls}, '>=', 1, 'once its mask is set again, it is served');
}

# -- signals and exit ---------------------------------------------------------------

{
    # perl runs a signal handler at its next statement; in EV's C loop
    # there is none until the loop returns, unless the loop runs it.
    my $r = child_case('a signal handler while EV waits', sub {
        Sys::Virt::Event::EV->register;
        my $t0 = Time::HiRes::time();
        my $ran;
        local $SIG{ALRM} = sub { $ran = Time::HiRes::time() - $t0; EV::break(EV::BREAK_ALL()) };
        Time::HiRes::alarm(0.2);
        my $limit = EV::timer(5, 0, sub { EV::break(EV::BREAK_ALL()) });
        EV::run;
        report(ran_after => defined $ran ? sprintf('%.3f', $ran) : 'never');
    });
    cmp_ok($r->{ran_after}, '<', 1.5, 'the handler runs while the loop waits (SIGALRM after 0.2 s)');
}

SKIP: {
    # under valgrind, on a busy machine, where a signal that comes during
    # EV's wait is handled depends on valgrind's own timing
    skip('a dying signal handler while EV waits: not under valgrind', 2)
        if $ENV{SVE_UNDER_MEMCHECK};
    # SIGALRM interrupts EV's wait (no Perl code of EV's runs then): the
    # handler runs from the loop, and its die ends EV::run.
    my $r = in_child(sub {
        Sys::Virt::Event::EV->register;
        local $SIG{ALRM} = sub { die "interrupted\n" };
        # armed once EV::run runs, so that it comes while EV waits however
        # slowly the process starts
        my $arm = EV::timer(0, 0, sub { Time::HiRes::alarm(0.1) });
        my $limit = EV::timer(5, 0, sub { EV::break(EV::BREAK_ALL()) });
        my $ok = eval { EV::run; 1 };
        print "error=", ($ok ? "none\n" : $@);
        # the loop runs again after that
        my $again = 0;
        my $t2 = Sys::Virt::Event::add_timeout(10, sub { $again++; EV::break(EV::BREAK_ALL()) });
        EV::run;
        print "again=$again\n";
    }, timeout => 20);
    like($r->{output}, qr/^error=interrupted$/m, 'a dying signal handler ends EV::run with its error');
    like($r->{output}, qr/^again=1$/m, 'and the loop is served again afterwards');
}

SKIP: {
    skip 'Sys::Virt is not installed', 6 unless have_sys_virt();
    require Sys::Virt;

    # A signal during a libvirt callback waits for it to return, then runs.
    my $r = child_case('a signal during a libvirt callback', sub {
        Sys::Virt::Event::EV->register;
        my $conn = Sys::Virt->new(uri => 'test:///default');
        my @order;
        local $SIG{USR1} = sub { push @order, 'handler' };
        $conn->domain_event_register_any(undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE(), sub {
            kill 'USR1', $$;
            push @order, 'callback before';
            my $x = 0;
            $x++ for 1 .. 1000;
            push @order, 'callback after';
        });
        $conn->get_domain_by_name('test')->suspend;
        ev_run_until(sub { grep { $_ eq 'handler' } @order }, 5);
        report(order => join(',', @order));
    });
    is($r->{order}, 'callback before,callback after,handler',
       'the handler runs once the callback (below libvirt) has returned');

    # exit() in a Sys::Virt callback: libvirt returns first, then the
    # program exits with that status, END blocks run, nothing is reported.
    my $x = in_child(sub {
        Sys::Virt::Event::EV->register;
        my $conn = Sys::Virt->new(uri => 'test:///default');
        $conn->domain_event_register_any(undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE(),
                                         sub { print "callback\n"; exit 7 });
        eval 'END { print "end\n" } 1' or die $@;
        $conn->get_domain_by_name('test')->suspend;
        ev_run_until(sub { 0 }, 5);
        print "not reached\n";
    }, timeout => 20);
    is($x->{exit}, 7, 'exit(7) in a callback exits with 7');
    like($x->{output}, qr/\Acallback\nend\n\z/, '... after END, with nothing reported')
        or diag($x->{output});

    # A die from a callback given to Sys::Virt unprotected crosses
    # libvirt (that is what protection prevents), out of EV::run; the
    # loop's count of libvirt frames is restored, so signals and frees
    # are not held for ever afterwards.
    # (libvirt's frames unwound leak what they held: not under valgrind)
    my $u = $ENV{SVE_UNDER_MEMCHECK} ? {} : child_case('an unprotected callback dies', sub {
        Sys::Virt::Event::EV->register;
        local $Sys::Virt::Event::PROTECT_CALLBACKS = 0;
        my $conn = Sys::Virt->new(uri => 'test:///default');
        $conn->domain_event_register_any(undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE(),
                                         sub { die "unprotected\n" });
        $conn->get_domain_by_name('test')->suspend;
        my $err = error_of { ev_run_until(sub { 0 }, 5) };
        my $handled = 0;
        local $SIG{USR1} = sub { $handled++ };
        kill 'USR1', $$;
        my $t = EV::timer(0.05, 0, sub { });
        EV::run;
        report(error => $err, handled => $handled);
    });
    SKIP: {
        skip 'an unprotected die leaks what libvirt held: not under valgrind', 2
            if $ENV{SVE_UNDER_MEMCHECK};
        is($u->{error}, 'unprotected', 'the die reaches the caller of EV::run');
        is($u->{handled}, 1, 'signals are not held afterwards');
    }

    # The same die, protected (the default): reported, the loop goes on.
    my $p = child_case('a protected callback dies', sub {
        Sys::Virt::Event::EV->register;
        my @died;
        local $Sys::Virt::Event::DIED = sub { push @died, $_[0] };
        my $conn = Sys::Virt->new(uri => 'test:///default');
        my $n = 0;
        $conn->domain_event_register_any(undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE(),
                                         sub { $n++; die "callback $n\n" });
        my $dom = $conn->get_domain_by_name('test');
        $dom->suspend;
        $dom->resume;
        ev_run_until(sub { $n >= 2 }, 5);
        report(calls => $n, died => join('', @died));
    });
    is("$p->{calls} $p->{died}", '2 callback 1 | callback 2 | ',
       'a protected callback that dies is reported, and the next event still arrives');
}

# -- threads ----------------------------------------------------------------

SKIP: {
    skip 'perl without threads', 3 unless $Config{useithreads};
    skip 'Sys::Virt is not installed', 3 unless have_sys_virt();
    my $r = child_case('libvirt called from another thread', sub {
        require threads;
        require Sys::Virt;
        Sys::Virt::Event::EV->register;
        # libvirt adds the test driver's event timer from the thread
        my $thr = threads->create(sub {
            my $c = Sys::Virt->new(uri => 'test:///default');
            my $err = error_of {
                $c->domain_event_register_any(undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE(), sub { });
            };
            undef $c;
            return $err;
        });
        report(thread => $thr->join);
        my $conn = Sys::Virt->new(uri => 'test:///default');
        my $fired = 0;
        $conn->domain_event_register_any(undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE(), sub { $fired++ });
        $conn->get_domain_by_name('test')->suspend;
        ev_run_until(sub { $fired }, 5);
        report(fired => $fired);
    });
    like($r->{thread}, qr/event timer/, "the other thread's registration fails cleanly (the loop refused libvirt's add)");
    like($r->{''}, qr/^Sys::Virt::Event: libvirt called add_timeout from a thread other than the one that registered the event loop; refused \(this is said once\)$/m,
         'with the one-time warning');
    is($r->{fired}, 1, "the registering thread's events still arrive");
}

# -- frees at program end ---------------------------------------------------

{
    my $r = in_child(sub {
        {
            package Guard;
            sub new { return bless {}, $_[0] }
            sub DESTROY { print "freed ${^GLOBAL_PHASE}\n" }
        }
        Sys::Virt::Event::EV->register;
        my $g = Guard->new;
        my $t = Sys::Virt::Event::add_timeout(0, sub { $g });
        undef $g;
        my $removed;
        my $w = EV::timer(0, 0, sub {
            Sys::Virt::Event::remove_timeout($t);    # from a callback of EV's: no libvirt frame
            $removed = 1;
        });
        EV::run(EV::RUN_ONCE()) until $removed;
        print "removed\n";
        exit 0;
    });
    is($r->{exit}, 0, 'a program that removes a timer and exits ends normally');
    like($r->{output}, qr/\A(?:freed RUN\nremoved\n|removed\nfreed END\n)\z/,
         "its coderef is freed once, before global destruction") or diag($r->{output});
}

done_testing;

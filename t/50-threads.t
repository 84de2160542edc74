#!/usr/bin/perl
#
# Threads.  State is per interpreter, and the interpreter that registered
# the loop is the only one libvirt may call into: public calls from
# another thread croak, handle objects a new thread inherits are refused,
# and libvirt calling the loop from another thread is refused with a
# warning printed once.  None of it may crash.  Each case runs in a child
# process, under a time limit; a child prints "name=value" lines for the
# parent to check.

use strict;
use warnings;

use Config;

BEGIN {
    if (!$Config{useithreads}) {
        require Test::More;
        Test::More::plan(skip_all => 'this perl is built without ithreads');
    }
}

use threads;

use FindBin ();
use lib "$FindBin::Bin/lib";

use Test::More;

use Sys::Virt::Event;
use TestLoop;
use TestUtil qw(in_child have_sys_virt child_case error_of);

my $FOREIGN_WARNING = qr/^Sys::Virt::Event: libvirt called \w+ from a thread other than the one that registered the event loop; refused/m;



# Runs $code in a new thread and returns its result (a list of
# "name=value" strings), or a line saying why there is none.
sub in_thread {
    my ($code) = @_;
    my $thr = threads->create({ context => 'list' }, $code);
    return ('thread_created=0') unless $thr;
    my @result = $thr->join;
    return ('thread_created=1', 'thread_joined=1', @result);
}

# ---------------------------------------------------------------------
# public calls and inherited handle objects

{
    my $out = child_case('calls from another thread', sub {
        my $loop = TestLoop->new;
        $loop->register;
        pipe(my $r, my $w) or die "pipe: $!";
        syswrite($w, 'x');
        my ($hfired, $tfired) = (0, 0);
        my $watch = Sys::Virt::Event::add_handle($r, Sys::Virt::Event::HANDLE_READABLE(),
                                                 sub { $hfired++ });
        my $timer = Sys::Virt::Event::add_timeout(60_000, sub { $tfired++ });
        my $h = $loop->{handles}{$watch};
        my $t = $loop->{timeouts}{$timer};
        my $rfd = fileno($r);

        print "$_\n" for in_thread(sub {
            my $rd = Sys::Virt::Event::HANDLE_READABLE();
            return (
                'add_timeout=' . error_of { Sys::Virt::Event::add_timeout(10, sub { }) },
                'add_handle=' . error_of { Sys::Virt::Event::add_handle($rfd, $rd, sub { }) },
                'update_timeout=' . error_of { Sys::Virt::Event::update_timeout($timer, 10) },
                'remove_timeout=' . error_of { Sys::Virt::Event::remove_timeout($timer) },
                'update_handle=' . error_of { Sys::Virt::Event::update_handle($watch, 0) },
                'remove_handle=' . error_of { Sys::Virt::Event::remove_handle($watch) },
                'run_timeout=' . error_of {
                    $loop->_run_timeout_callback($t->{timer}, $t->{cb}, $t->{opaque})
                },
                'run_timeout_class=' . error_of {
                    Sys::Virt::Event->_run_timeout_callback($t->{timer}, $t->{cb}, $t->{opaque})
                },
                'run_handle=' . error_of {
                    $loop->_run_handle_callback($h->{watch}, $h->{fd}, $rd, $h->{cb}, $h->{opaque})
                },
                'free=' . error_of { $loop->_free_callback_opaque($t->{ff}, $t->{opaque}) },
                'register=' . error_of { $loop->register },
                'register_new=' . error_of { TestLoop->new->register },
                'register_default=' . error_of { Sys::Virt::Event::register_default() },
                "thread_hfired=$hfired",
                "thread_tfired=$tfired",
            );
        });

        # the main thread's loop and handles are untouched
        print "main_run_timeout=", error_of {
            $loop->_run_timeout_callback($t->{timer}, $t->{cb}, $t->{opaque})
        }, "\n";
        print "tfired=$tfired\n";
        $loop->run_until(sub { $hfired }, 5);
        print "hfired=$hfired\n";
        my $fired = 0;
        my $new = Sys::Virt::Event::add_timeout(10, sub { $fired++ });
        $loop->run_until(sub { $fired }, 5);
        print "new_fired=$fired\n";
        Sys::Virt::Event::remove_timeout($_) for $timer, $new;
        Sys::Virt::Event::remove_handle($watch);
        $loop->run_once(0);
        print "idle=", ($loop->idle ? 1 : 0), "\n";
    });

    is($out->{thread_created}, 1, 'the thread was created');
    is($out->{thread_joined}, 1, 'the thread joined');
    for my $f (qw(add_timeout add_handle update_timeout remove_timeout update_handle remove_handle)) {
        like($out->{$f}, qr/^Sys::Virt::Event::\Q$f\E: called from a thread other than the one that registered the event loop/,
             "public $f from another thread croaks");
    }
    like($out->{run_timeout}, qr/^Sys::Virt::Event::_run_timeout_callback: \$cb belongs to another thread's event loop/,
         "_run_timeout_callback refuses a thread's copy of the main thread's handles");
    like($out->{run_timeout_class}, qr/^Sys::Virt::Event::_run_timeout_callback: \$cb belongs to another thread's event loop/,
         'also when called as a class method');
    like($out->{run_handle}, qr/^Sys::Virt::Event::_run_handle_callback: \$cb belongs to another thread's event loop/,
         "_run_handle_callback refuses a thread's copy of the main thread's handles");
    like($out->{free}, qr/^Sys::Virt::Event::_free_callback_opaque: \$ff belongs to another thread's event loop/,
         "_free_callback_opaque refuses a thread's copy of the main thread's handles");
    like($out->{register}, qr/^Sys::Virt::Event::register: another thread already registered an event loop/,
         'register from another thread croaks');
    like($out->{register_new}, qr/^Sys::Virt::Event::register: another thread already registered an event loop/,
         'register of a new object from another thread croaks');
    like($out->{register_default}, qr/^Sys::Virt::Event::register_default: a Perl event loop is already registered/,
         'register_default from another thread croaks');
    is($out->{thread_hfired}, 0, 'no watch callback ran in the thread');
    is($out->{thread_tfired}, 0, 'no timer callback ran in the thread');
    is($out->{main_run_timeout}, '', "the main thread's own handles still dispatch");
    is($out->{tfired}, 1, 'and run the timer callback');
    is($out->{hfired}, 1, 'the main thread\'s watch still fires');
    is($out->{new_fired}, 1, 'a new public timer fires in the main thread');
    is($out->{idle}, 1, 'nothing is left registered');
    unlike($out->{''}, $FOREIGN_WARNING, 'the refused public calls never reached libvirt');
}

# ---------------------------------------------------------------------
# libvirt calling the loop from another thread

SKIP: {
    skip 'Sys::Virt is not installed', 1 unless have_sys_virt();

    my $out = child_case('libvirt calls from another thread', sub {
        require Sys::Virt;
        my $loop = TestLoop->new;
        $loop->register;

        print "$_\n" for in_thread(sub {
            my $conn = Sys::Virt->new(uri => 'test:///default');
            my @r;
            print STDERR "FIRST_CALL\n";
            push @r, 'first=' . error_of {
                $conn->domain_event_register_any(undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE(), sub { })
            };
            print STDERR "SECOND_CALL\n";
            push @r, 'second=' . error_of {
                $conn->domain_event_register_any(undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE(), sub { })
            };
            print STDERR "CALLS_DONE\n";
            undef $conn;
            push @r, 'thread_closed=1';
            return @r;
        });
        print "loop_calls=", scalar(@{$loop->{calls}}), "\n";

        # the main thread's loop keeps working
        my $fired = 0;
        my $timer = Sys::Virt::Event::add_timeout(10, sub { $fired++ });
        $loop->run_until(sub { $fired }, 5);
        print "fired=$fired\n";
        Sys::Virt::Event::remove_timeout($timer);

        # and libvirt, called from the main thread, is served
        my $conn = Sys::Virt->new(uri => 'test:///default');
        my @events;
        my $id = $conn->domain_event_register_any(undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE(),
                                                  sub { push @events, 1 });
        my $dom = $conn->get_domain_by_name('test');
        $dom->suspend;
        $dom->resume;
        $loop->run_until(sub { @events >= 2 }, 5);
        print "events=", scalar(@events), "\n";
        $conn->domain_event_deregister_any($id);
        undef $dom;
        undef $conn;
        $loop->run_once(0);
        print "idle=", ($loop->idle ? 1 : 0), "\n";
    });

    is($out->{thread_created}, 1, 'the thread was created');
    is($out->{thread_joined}, 1, 'the thread joined');
    is($out->{thread_closed}, 1, "the thread's connection closed");
    like($out->{first}, qr/libvirt error code: \d+, message: .*event timer/,
         'registering a domain event callback in the thread fails cleanly');
    like($out->{second}, qr/libvirt error code: \d+, message: .*event timer/,
         'and again');
    is($out->{loop_calls}, 0, 'the loop object was never called from the thread');
    my $text = $out->{''};
    my $warnings = () = $text =~ /$FOREIGN_WARNING/g;
    is($warnings, 1, 'the refusal is warned about once');
    like($text, qr/FIRST_CALL\n(?s:.*)^Sys::Virt::Event: libvirt called add_timeout from a thread other than[^\n]*\n(?s:.*)SECOND_CALL\n/m,
         'the warning comes from the first call and names add_timeout');
    like($text, qr/SECOND_CALL\nCALLS_DONE\n/, 'the second call prints nothing');
    is($out->{fired}, 1, "the main thread's loop still fires a public timer");
    is($out->{events}, 2, 'domain events registered from the main thread are delivered');
    is($out->{idle}, 1, 'nothing is left registered');
}

done_testing;

use strict;
use warnings;

# The callbacks a program registers through Sys::Virt itself (domain,
# network, storage pool, node device and secret events, the close
# callback, stream callbacks) are called by Sys::Virt from inside
# libvirt's dispatch, without an eval.  While Sys::Virt::Event is loaded
# they reach Sys::Virt protected: a die is reported (through
# $Sys::Virt::Event::DIED, or as a warning) and the rest of libvirt's
# batch is still delivered; exit() and Perl signal handlers wait until
# libvirt has returned.  Checked here:
#   - a batch of two domain events whose first callback dies, with every
#     loop: libvirt's default loop and Sys::Virt::Event::AnyEvent (in
#     child processes, one loop each) and TestLoop (in this process);
#   - local $Sys::Virt::Event::PROTECT_CALLBACKS = 0 at registration:
#     upstream's behaviour, the die unwinds libvirt and the batch's
#     second event is lost;
#   - exit(N) in a callback, and a dying signal handler whose signal
#     arrives while a callback runs;
#   - through a private libvirtd: a stream callback, and the close
#     callback when the daemon is killed, from the loop or inside a call;
#   - every registration method libvirt's test driver can trigger (it
#     has no secrets: those cases skip), the legacy
#     domain_event_register, one coderef registered several times, a
#     local stream, and deregistration of each;
#   - a die that unwinds run_default() leaves nothing held; a close
#     callback run inside a call from the top level keeps what it held
#     until the call has returned (libvirt then frees the callback's
#     data, with its lock held, and destructors run).

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use TestUtil qw(in_child error_of have_sys_virt);
use PrivateLibvirtd;

BEGIN {
    plan skip_all => 'Sys::Virt is not installed' unless have_sys_virt();
}

use Scalar::Util ();
use Sys::Virt;
use Sys::Virt::Event;
use Time::HiRes ();
use DaemonCase qw(loop_kinds run_case report elapsed_ms);

my $URI = 'test:///default';
my $DOM = 'test';
my $FIRST_DIES = "the first event's callback dies";

sub lifecycle { return join '/', @_ }

# The (event, detail) pairs of destroy and then create.
my @DESTROY_CREATE_ARGS = (
    [Sys::Virt::Domain::EVENT_STOPPED, Sys::Virt::Domain::EVENT_STOPPED_DESTROYED],
    [Sys::Virt::Domain::EVENT_STARTED, Sys::Virt::Domain::EVENT_STARTED_BOOTED],
);
my @DESTROY_CREATE = map { lifecycle(@$_) } @DESTROY_CREATE_ARGS;

# -- the loops ------------------------------------------------------------

# libvirt's default loop, with the interface of DaemonCase's loops.  A
# repeating timer makes every run_default() return, so waits stay bounded.
{
    package DefaultLoop;

    sub new {
        my ($class) = @_;
        Sys::Virt::Event::register_default();
        return bless { ticker => Sys::Virt::Event::add_timeout(20, sub { }) }, $class;
    }

    sub run_until {
        my ($self, $cond, $seconds) = @_;
        return TestUtil::default_run_until($cond, $seconds);
    }
}

sub loop_of {
    my ($kind) = @_;
    return $kind eq 'default' ? DefaultLoop->new : DaemonCase->loop($kind);
}

# ([kind, why it cannot run or undef], ...): every loop we ship
my @KINDS = (['default', undef], loop_kinds());

# -- what the cases share ---------------------------------------------------

# Sets $Sys::Virt::Event::DIED (with $hook) and $SIG{__WARN__} to collect
# into @$reports; call under local.
sub collect_reports {
    my ($reports, $hook) = @_;
    $Sys::Virt::Event::DIED = $hook ? sub { push @$reports, "$_[1]: $_[0]" } : undef;
    $SIG{__WARN__} = sub { push @$reports, "warning: $_[0]" };
    return;
}

# Texts (errors, reports) on one line, without their final newlines.
sub one_line {
    my ($error) = @_;
    (my $text = "$error") =~ s/\n+\z//;
    $text =~ s/\n/ | /g;
    return $text;
}

sub tidy { return join ' | ', map { one_line($_) } @_ }

# Registers a lifecycle callback that dies on its first event, and queues
# two events back to back (destroy, create): libvirt hands both to one
# dispatch.  Then runs the loop.  With $hook the die goes to $DIED,
# without it to a warning.  Returns what arrived and what was reported.
sub dying_batch {
    my ($loop, $conn, $hook) = @_;
    my $dom = $conn->get_domain_by_name($DOM);
    my (@events, @reports);
    local ($Sys::Virt::Event::DIED, $SIG{__WARN__});
    collect_reports(\@reports, $hook);
    my $id = $conn->domain_event_register_any(undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE, sub {
        push @events, lifecycle(@_[2, 3]);
        die "$FIRST_DIES\n" if @events == 1;
    });
    $dom->destroy;
    $dom->create;
    my $error = error_of { $loop->run_until(sub { @events >= 2 }, 5) };
    # and then nothing more
    $error ||= error_of { $loop->run_until(sub { @events > 2 }, 0.2) };
    $conn->domain_event_deregister_any($id);
    return { error => $error, events => join(',', @events), reports => tidy(@reports) };
}

sub check_batch {
    my ($name, $r, $hook) = @_;
    is($r->{error}, '', "$name: the die does not come out of the loop");
    is($r->{events}, join(',', @DESTROY_CREATE),
       "$name: both events of the batch arrive, in order");
    is($r->{reports},
       $hook ? "Sys::Virt domain event callback: $FIRST_DIES"
             : "warning: Sys::Virt::Event: Sys::Virt domain event callback died: $FIRST_DIES",
       "$name: the die is reported once, " . ($hook ? 'through $DIED' : 'as a warning'));
    return;
}

# Counts the destructions of the objects a callback holds: the callback is
# released once Sys::Virt and libvirt are done with it.
{
    package Guard;
    sub new { my ($class, $count) = @_; return bless { count => $count }, $class }
    sub DESTROY { ${ $_[0]{count} }++ }
}

# A child reports a result hash under "$prefix."; the parent reads it back.
sub report_as {
    my ($prefix, $r) = @_;
    report(map { ("$prefix.$_" => $r->{$_}) } keys %$r);
    return;
}

sub results_of {
    my ($out, $prefix) = @_;
    return { map { /^\Q$prefix\E\.(.*)\z/ ? ($1 => $out->{$_}) : () } keys %$out };
}

# The domain's screenshot (the test driver sends a PNG image through a
# stream) read whole with a blocking stream: what a callback must get.
sub screenshot_blocking {
    my ($conn) = @_;
    my $st = $conn->new_stream(0);
    $conn->get_domain_by_name($DOM)->screenshot($st, 0);
    my $data = '';
    while (1) {
        my $n = $st->recv(my $buf, 65536);
        last if $n <= 0;
        $data .= $buf;
    }
    $st->finish;
    return $data;
}

# Reads the screenshot through a non-blocking stream and its callback,
# which dies on its first call; at the end of the stream it removes
# itself.  Returns whether what was read is $expected, what was
# reported, and how often the callback ran after it was removed.
sub dying_stream {
    my ($loop, $conn, $expected) = @_;
    my ($data, $calls, $removed_at, @reports) = ('', 0);
    local ($Sys::Virt::Event::DIED, $SIG{__WARN__});
    collect_reports(\@reports, 1);
    my $st = $conn->new_stream(Sys::Virt::Stream::NONBLOCK);
    $conn->get_domain_by_name($DOM)->screenshot($st, 0);
    $st->add_callback(Sys::Virt::Stream::EVENT_READABLE, sub {
        my ($s) = @_;
        $calls++;
        my $n = $s->recv(my $buf, 4096);
        if ($n > 0) {
            $data .= $buf;
        } elsif ($n == 0) {
            $removed_at = $calls;
            $s->remove_callback;
            $s->finish;
        }
        die "the stream callback dies\n" if $calls == 1;
    });
    my $error = error_of { $loop->run_until(sub { defined $removed_at }, 5) };
    $error ||= error_of { $loop->run_until(sub { $calls > $removed_at }, 0.2) }
        if defined $removed_at;
    return {
        error         => $error,
        bytes         => length $data,
        expected      => length $expected,
        intact        => length $data && $data eq $expected ? 1 : 0,
        calls         => $calls,
        after_removal => defined $removed_at ? $calls - $removed_at : 'never removed',
        reports       => tidy(@reports),
    };
}

sub check_stream {
    my ($name, $r) = @_;
    my $calls = $r->{calls} // 0;
    is($r->{error}, '', "$name: the die does not come out of the loop");
    ok($calls > 1, "$name: the callback is called again after it died ($calls calls)");
    ok($r->{intact}, "$name: the whole image arrives ("
       . ($r->{bytes} // 0) . ' of ' . ($r->{expected} // '?') . ' bytes)');
    is($r->{after_removal}, 0, "$name: no call after remove_callback");
    is($r->{reports}, 'Sys::Virt stream callback: the stream callback dies',
       "$name: the die is reported once through \$DIED");
    return;
}

# -- every loop: a batch whose first callback dies ------------------------
# Each loop in a child of its own (libvirt takes one loop per process);
# TestLoop's turn comes in this process, further down.

for my $entry (@KINDS) {
    my ($kind, $missing) = @$entry;
    next if $kind eq 'TestLoop';
    SKIP: {
        skip("$kind: $missing", 9) if $missing;
        my $out = run_case("$kind: a dying batch", sub {
            my $loop = loop_of($kind);
            my $conn = Sys::Virt->new(uri => $URI);
            report_as(hook => dying_batch($loop, $conn, 1));
            report_as(warn => dying_batch($loop, $conn, 0));
        }, timeout => 20);
        check_batch("$kind, \$DIED set", results_of($out, 'hook'), 1);
        check_batch("$kind, \$DIED unset", results_of($out, 'warn'), 0);
    }
}

# -- the protection switched off ---------------------------------------------
# Registered under local $PROTECT_CALLBACKS = 0, the coderef reaches
# Sys::Virt as it is: its die unwinds libvirt's dispatch and the batch's
# second event is lost.  What the unwinding skipped must not be left
# held: afterwards a signal handler runs, and exit() exits, at the top
# level.  Then a protected registration works as before.

sub parse_report {
    my ($output) = @_;
    return { map { /^(\w[\w.]*)=(.*)\z/ ? ($1 => $2) : () } split /\n/, $output };
}

for my $kind (qw(TestLoop default)) {
    my $t = "$kind: PROTECT_CALLBACKS = 0";
    # the die leaks what libvirt's unwound frames would have released
    if ($ENV{SVE_UNDER_MEMCHECK}) {
        SKIP: { skip "$t leaks libvirt memory on purpose; not run under memcheck", 1 }
        next;
    }
    my $r = in_child(sub {
        my $loop = loop_of($kind);
        my $conn = Sys::Virt->new(uri => $URI);
        my $dom = $conn->get_domain_by_name($DOM);
        my (@events, @reports);
        local ($Sys::Virt::Event::DIED, $SIG{__WARN__});
        collect_reports(\@reports, 1);
        my $id = do {
            local $Sys::Virt::Event::PROTECT_CALLBACKS = 0;
            $conn->domain_event_register_any(undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE, sub {
                push @events, lifecycle(@_[2, 3]);
                die "$FIRST_DIES\n" if @events == 1;
            });
        };
        $dom->destroy;
        $dom->create;
        my $error = error_of { $loop->run_until(sub { @events >= 2 }, 2) };
        my $later = error_of { $loop->run_until(sub { @events >= 2 }, 0.5) };
        report(error => $error, later_error => $later,
               events => join(',', @events), reports => tidy(@reports));
        $conn->domain_event_deregister_any($id);

        my $handled = 0;
        local $SIG{USR1} = sub { $handled++ };
        kill 'USR1', $$;
        select undef, undef, undef, 0.05;
        report(handled => $handled);

        report_as(after => dying_batch($loop, $conn, 1));
        exit 5;
    }, timeout => 15);
    my $out = parse_report($r->{output});
    ok(!$r->{timed_out}, "$t: no hang");
    is($out->{error}, $FIRST_DIES,
       "$t: the die comes out of the loop's dispatch, through libvirt");
    is($out->{events}, $DESTROY_CREATE[0], "$t: the second event of the batch is lost");
    is($out->{later_error}, '', "$t: and does not come later");
    is($out->{reports}, '', "$t: nothing is reported: the die was not caught");
    check_batch("$t, then a protected registration", results_of($out, 'after'), 1);
    is($out->{handled}, 1, "$t: afterwards a signal handler runs at the top level");
    is($r->{exit}, 5, "$t: and exit() at the top level exits with its status");
}

# -- exit() in a callback ----------------------------------------------------

# A callback that calls exit(7) on its first call, noting when in $state.
sub exiting_callback {
    my ($state) = @_;
    return sub {
        $state->{calls}++;
        print "callback=$state->{calls}\n";
        if ($state->{calls} == 1) {
            $state->{exit_at} = Time::HiRes::time();
            exit 7;
        }
    };
}

# exit_case(NAME, KIND, sub { my ($state) = @_; ... }, timeout => SECONDS)
# In a child with a loop of KIND, the sub registers an exiting_callback
# and makes libvirt call it; it returns the condition the loop waits for.
# The loop runs in a statement whose rest must not run.  An END block
# compiled in the child reports how long after exit() it ran.
sub exit_case {
    my ($t, $kind, $setup, %opts) = @_;
    my $r = in_child(sub {
        my $loop = loop_of($kind);
        local $Sys::Virt::Event::DIED = sub { print "reported=$_[1]: $_[0]\n" };
        my $state = { calls => 0 };
        eval q{END {
            print "end_block=ran\n", "exit_ms=", elapsed_ms($state->{exit_at}), "\n"
                if $state->{exit_at};
        } 1} or die $@;
        my $cond = $setup->($state);
        my $done = $loop->run_until($cond, 5), print "same_statement=continued\n";
        print "loop_returned=$done\n";
    }, timeout => $opts{timeout} || 10);
    my $out = $r->{output};
    ok(!$r->{timed_out}, "$t: no hang");
    is($r->{exit}, 7, "$t: the process exits with the callback's status")
        or diag("output:\n$out");
    like($out, qr/^callback=1$/m, "$t: the callback ran");
    unlike($out, qr/^callback=2$/m, "$t: no callback runs once the program is exiting");
    unlike($out, qr/^(?:same_statement|loop_returned)=/m,
           "$t: the code after the dispatch does not go on");
    unlike($out, qr/reported=|Sys::Virt::Event:/, "$t: the exit is not reported as an error");
    my ($ms) = $out =~ /^exit_ms=(\S+)$/m;
    ok(defined $ms && $ms < 1000,
       "$t: END blocks run, promptly (" . ($ms // 'never') . ' ms after exit)');
    return;
}

# The first of a batch of two domain events.
for my $entry (@KINDS) {
    my ($kind, $missing) = @$entry;
    my $t = "$kind: exit(7) in a domain event callback";
    SKIP: {
        skip("$kind: $missing", 7) if $missing;
        exit_case($t, $kind, sub {
            my ($state) = @_;
            my $conn = Sys::Virt->new(uri => $URI);
            my $dom = $conn->get_domain_by_name($DOM);
            $conn->domain_event_register_any(undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE,
                                             exiting_callback($state));
            $dom->destroy;
            $dom->create;
            return sub { $state->{calls} >= 2 };
        });
    }
}

# -- a dying signal handler, its signal arriving inside a callback -----------
# With the loops whose dispatch the program calls itself.  Under AnyEvent
# the dispatch is called by the backend, and what becomes of an error
# there is the backend's affair (EV hands it to $EV::DIED).

for my $kind (qw(TestLoop default)) {
    my $t = "$kind: SIGUSR1 inside a callback";
    my $out = run_case($t, sub {
        my $loop = loop_of($kind);
        my $conn = Sys::Virt->new(uri => $URI);
        my $dom = $conn->get_domain_by_name($DOM);
        my (@events, @reports);
        my $completed = 'no';
        local ($Sys::Virt::Event::DIED, $SIG{__WARN__});
        collect_reports(\@reports, 1);
        local $SIG{USR1} = sub { die "the USR1 handler dies\n" };
        $conn->domain_event_register_any(undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE, sub {
            push @events, lifecycle(@_[2, 3]);
            return unless @events == 1;
            kill 'USR1', $$;
            # time for the signal to arrive, should the kernel deliver
            # it to another of libvirt's threads
            select undef, undef, undef, 0.05;
            $completed = 'yes';
        });
        $dom->destroy;
        $dom->create;
        my $error = error_of { $loop->run_until(sub { @events >= 2 }, 5) };
        report(error => $error, completed => $completed,
               events => join(',', @events), reports => tidy(@reports));
    });
    is($out->{completed}, 'yes', "$t: the callback completes");
    is($out->{events}, join(',', @DESTROY_CREATE), "$t: and so does the batch");
    is($out->{error}, 'the USR1 handler dies',
       "$t: the handler's die then comes out of the loop's dispatch");
    is($out->{reports}, '', "$t: it is not reported as the callback's error");
}

# -- through a private libvirtd: streams, and the close callback -------------

# SIGKILLs the daemon from a timer in the loop, 50 ms from now, so that the
# fault hits while the loop runs.  The timer removes itself.
sub kill_from_loop {
    my ($d) = @_;
    my $timer;
    $timer = Sys::Virt::Event::add_timeout(50, sub {
        Sys::Virt::Event::remove_timeout($timer);
        $d->signal('KILL');
    });
    return;
}

SKIP: {
    my $why = PrivateLibvirtd::unavailable();
    skip("no private libvirtd: $why", 1) if $why;

    for my $entry (@KINDS) {
        my ($kind, $missing) = @$entry;
        my $t = "$kind, libvirtd";
        SKIP: {
            skip("$kind: $missing", 14) if $missing;
            my $d = PrivateLibvirtd->start;
            my $out = run_case($t, sub {
                local $SIG{PIPE} = 'IGNORE';
                my $loop = loop_of($kind);
                my $conn = Sys::Virt->new(uri => $d->uri);
                my $image = eval { screenshot_blocking($conn) };
                if (defined $image) {
                    report_as(stream => dying_stream($loop, $conn, $image));
                } else {
                    report(no_stream => one_line($@));
                }

                my (@closed, @other_closed, @reports);
                local ($Sys::Virt::Event::DIED, $SIG{__WARN__});
                collect_reports(\@reports, 1);
                $conn->register_close_callback(sub {
                    push @closed, $_[1];
                    die "the close callback dies\n";
                });
                my $other = Sys::Virt->new(uri => $d->uri);
                $other->register_close_callback(sub { push @other_closed, $_[1] });
                $other->unregister_close_callback;

                kill_from_loop($d);
                my $error = error_of { $loop->run_until(sub { @closed }, 5) };
                $error ||= error_of { $loop->run_until(sub { @other_closed }, 0.2) };
                my $ticks = 0;
                my $ticker = Sys::Virt::Event::add_timeout(10, sub { $ticks++ });
                $error ||= error_of { $loop->run_until(sub { $ticks >= 3 }, 2) };
                Sys::Virt::Event::remove_timeout($ticker);
                report(close_error => $error, closed => join(',', @closed),
                       other_closed => join(',', @other_closed), ticks => $ticks,
                       close_reports => tidy(@reports));
                $conn->unregister_close_callback;
                report(unregistered => 1);
            });
            SKIP: {
                skip("$t: the test driver cannot send a screenshot: $out->{no_stream}", 5)
                    if $out->{no_stream};
                check_stream("$t stream", results_of($out, 'stream'));
            }
            is($out->{closed}, Sys::Virt::CLOSE_REASON_EOF,
               "$t close: the close callback is called once, with reason EOF");
            is($out->{close_reports}, 'Sys::Virt close callback: the close callback dies',
               "$t close: its die is reported once through \$DIED");
            is($out->{close_error}, '', "$t close: the die does not come out of the loop");
            is($out->{other_closed}, '',
               "$t close: an unregistered close callback is not called");
            ok(($out->{ticks} // 0) >= 3, "$t close: the loop goes on");
            is($out->{unregistered}, 1, "$t close: unregister_close_callback returns");
            undef $d;
        }
    }

    # libvirt calls the close callback with the callback's data locked, so
    # unregistering it in an END block hangs unless the exit waited for
    # libvirt to return.
    for my $kind (qw(TestLoop default)) {
        my $d = PrivateLibvirtd->start;
        exit_case("$kind, libvirtd: exit(7) in the close callback, unregistered in END",
                  $kind, sub {
            my ($state) = @_;
            $SIG{PIPE} = 'IGNORE';
            my $conn = Sys::Virt->new(uri => $d->uri);
            $conn->register_close_callback(exiting_callback($state));
            # runs before the END block that reports: END blocks run last first
            eval q{END { $conn->unregister_close_callback if $state->{exit_at} } 1} or die $@;
            kill_from_loop($d);
            return sub { $state->{calls} };
        });
        undef $d;
    }

    # A call on a connection whose daemon is gone runs the close callback
    # inside the call, below the program's own Sys::Virt method.
    {
        my $d = PrivateLibvirtd->start;
        my $t = 'libvirtd: the close callback dies inside a call';
        my $out = run_case($t, sub {
            local $SIG{PIPE} = 'IGNORE';
            loop_of('TestLoop');
            my $conn = Sys::Virt->new(uri => $d->uri);
            my (@closed, @reports);
            local ($Sys::Virt::Event::DIED, $SIG{__WARN__});
            collect_reports(\@reports, 1);
            $conn->register_close_callback(sub {
                push @closed, $_[1];
                die "the close callback dies\n";
            });
            $d->signal('KILL');
            report(daemon_gone => $d->wait_gone(5) ? 1 : 0);
            my $error = error_of { $conn->get_domain_by_name($DOM) };
            report(closed => scalar @closed, call_error => $error, reports => tidy(@reports));
            $conn->unregister_close_callback;
            report(unregistered => 1);
        });
        is($out->{daemon_gone}, 1, "$t: the daemon is gone");
        is($out->{closed}, 1, "$t: the close callback is called, once, inside the call");
        like($out->{call_error}, qr/^libvirt error code: \d+/,
             "$t: the call fails with libvirt's own error, not the callback's");
        is($out->{reports}, 'Sys::Virt close callback: the close callback dies',
           "$t: the die is reported once through \$DIED");
        is($out->{unregistered}, 1, "$t: unregister_close_callback returns");
        undef $d;
    }

    # The same, with a destructor in the callback's closure: libvirt frees
    # the callback (Sys::Virt's free function, the destructor) before it
    # returns, with the callback's data still locked.  A signal that
    # arrived while the callback ran must wait for the call to return,
    # and so must exit().
    {
        my $d = PrivateLibvirtd->start;
        my $t = 'libvirtd: a signal inside a close callback run inside a call';
        my $out = run_case($t, sub {
            local $SIG{PIPE} = 'IGNORE';
            loop_of('TestLoop');
            my $conn = Sys::Virt->new(uri => $d->uri);
            my (@reports, $completed, $destroyed);
            local ($Sys::Virt::Event::DIED, $SIG{__WARN__});
            collect_reports(\@reports, 1);
            local $SIG{USR1} = sub { die "the USR1 handler dies\n" };
            {
                my $guard = Guard->new(\$destroyed);   # the closure holds the last reference
                $conn->register_close_callback(sub {
                    $guard->{calls}++;
                    kill 'USR1', $$;
                    select undef, undef, undef, 0.05;
                    $completed = 'yes';
                });
            }
            report(destroyed_before => $destroyed // 0);
            $d->signal('KILL');
            $d->wait_gone(5);
            my $call_error;
            my $error = error_of {
                $call_error = error_of { $conn->get_domain_by_name($DOM) };
                1 for 1 .. 2;       # statements, where a held handler runs
            };
            # the handler may run as error_of returns, before the assignment
            report(completed => $completed // 'no',
                   errors => ($call_error // 'none') . ", $error",
                   reports => tidy(@reports));
        });
        is($out->{completed}, 'yes', "$t: the callback completes");
        is($out->{destroyed_before}, 0, "$t: the callback holds an object with a destructor");
        like($out->{errors}, qr/(?:^|, )the USR1 handler dies(?:,|\z)/,
             "$t: the handler's die reaches the program");
        is($out->{reports}, '', "$t: and is not lost in a destructor's cleanup");
        undef $d;

        $d = PrivateLibvirtd->start;
        $t = 'libvirtd: exit(7) in a close callback run inside a call, unregistered in END';
        my $r = in_child(sub {
            $SIG{PIPE} = 'IGNORE';
            loop_of('TestLoop');
            my $conn = Sys::Virt->new(uri => $d->uri);
            my $exiting;
            {
                my $guard = Guard->new(\my $destroyed);
                $conn->register_close_callback(sub {
                    $guard->{calls}++;
                    $exiting = 1;
                    exit 7;
                });
            }
            eval q{END {
                if ($exiting) {
                    $conn->unregister_close_callback;
                    print "end_block=ran\n";
                }
            } 1} or die $@;
            $d->signal('KILL');
            $d->wait_gone(5);
            eval { $conn->get_domain_by_name($DOM) };
        }, timeout => 3);
        ok(!$r->{timed_out} && ($r->{exit} // -1) == 7
           && $r->{output} =~ /^end_block=ran$/m,
           "$t: exits with 7 once the call has returned; END blocks run; no hang")
            or diag($r->{output});
        undef $d;
    }
}

# -- in this process, with TestLoop --------------------------------------------

my $loop = loop_of('TestLoop');
my $conn = Sys::Virt->new(uri => $URI);
my $dom = $conn->get_domain_by_name($DOM);

check_batch('TestLoop, $DIED set', dying_batch($loop, $conn, 1), 1);
check_batch('TestLoop, $DIED unset', dying_batch($loop, $conn, 0), 0);

sub describe {
    return join ' ', map {
        !defined $_ ? 'undef'
            : !ref $_ ? $_
            : $_->can('get_name') ? $_->get_name
            : $_->get_uuid_string
    } @_;
}

# One registration method, in a table:
#   what      as Sys::Virt::Event names it in reports
#   register  sub ($callback): registers it, returns the callback id
#   release   sub ($id): deregisters
#   act       sub: makes libvirt queue some events, back to back; returns
#             what the callback should be told of each ("name event detail")
my $NET_XML = "<network><name>cbnet</name><bridge name='cbnet0'/>"
    . "<ip address='192.168.231.1' netmask='255.255.255.0'/></network>";
my $POOL_XML = "<pool type='dir'><name>cbpool</name>"
    . "<target><path>/cbpool</path></target></pool>";
my $VHBA_XML = "<device><parent>scsi_host1</parent><capability type='scsi_host'>"
    . "<capability type='fc_host'><wwnn>2001000012341234</wwnn>"
    . "<wwpn>1001000012341234</wwpn></capability></capability></device>";
my $SECRET_XML = "<secret ephemeral='no' private='no'><usage type='volume'>"
    . "<volume>/cbpool/vol</volume></usage></secret>";

my @REGISTRATIONS = (
    {
        name     => 'network lifecycle',
        what     => 'network event callback',
        register => sub {
            $conn->network_event_register_any(
                undef, Sys::Virt::Network::EVENT_ID_LIFECYCLE, $_[0]);
        },
        release  => sub { $conn->network_event_deregister_any($_[0]) },
        act      => sub {
            my $net = $conn->define_network($NET_XML);
            $net->create;
            $net->destroy;
            $net->undefine;
            return map { "cbnet $_ 0" }
                Sys::Virt::Network::EVENT_DEFINED, Sys::Virt::Network::EVENT_STARTED,
                Sys::Virt::Network::EVENT_STOPPED, Sys::Virt::Network::EVENT_UNDEFINED;
        },
    },
    {
        name     => 'storage pool lifecycle',
        what     => 'storage pool event callback',
        register => sub {
            $conn->storage_pool_event_register_any(
                undef, Sys::Virt::StoragePool::EVENT_ID_LIFECYCLE, $_[0]);
        },
        release  => sub { $conn->storage_pool_event_deregister_any($_[0]) },
        act      => sub {
            my $pool = $conn->define_storage_pool($POOL_XML);
            $pool->create;
            $pool->destroy;
            $pool->undefine;
            return map { "cbpool $_ 0" }
                Sys::Virt::StoragePool::EVENT_DEFINED, Sys::Virt::StoragePool::EVENT_STARTED,
                Sys::Virt::StoragePool::EVENT_STOPPED, Sys::Virt::StoragePool::EVENT_UNDEFINED;
        },
    },
    {
        name     => 'storage pool refresh',
        what     => 'storage pool event callback',
        register => sub {
            $conn->storage_pool_event_register_any(
                undef, Sys::Virt::StoragePool::EVENT_ID_REFRESH, $_[0]);
        },
        release  => sub { $conn->storage_pool_event_deregister_any($_[0]) },
        act      => sub {
            my ($pool) = grep { $_->is_active } $conn->list_all_storage_pools;
            die "the test driver has no active storage pool\n" unless $pool;
            $pool->refresh for 1 .. 2;
            return ($pool->get_name) x 2;
        },
    },
    {
        # the test driver creates a vHBA on an fc_host with vport_ops
        name     => 'node device lifecycle (a vHBA created and destroyed)',
        what     => 'node device event callback',
        register => sub {
            $conn->node_device_event_register_any(
                undef, Sys::Virt::NodeDevice::EVENT_ID_LIFECYCLE, $_[0]);
        },
        release  => sub { $conn->node_device_event_deregister_any($_[0]) },
        act      => sub {
            my $dev = $conn->create_node_device($VHBA_XML);
            my $name = $dev->get_name;
            $dev->destroy;
            return map { "$name $_ 0" }
                Sys::Virt::NodeDevice::EVENT_CREATED, Sys::Virt::NodeDevice::EVENT_DELETED;
        },
    },
    # libvirt 9.0's test driver has no secrets: these two skip there
    {
        name     => 'secret lifecycle',
        what     => 'secret event callback',
        register => sub {
            $conn->secret_event_register_any(
                undef, Sys::Virt::Secret::EVENT_ID_LIFECYCLE, $_[0]);
        },
        release  => sub { $conn->secret_event_deregister_any($_[0]) },
        act      => sub {
            my $secret = $conn->define_secret($SECRET_XML);
            my $uuid = $secret->get_uuid_string;
            $secret->undefine;
            return map { "$uuid $_ 0" }
                Sys::Virt::Secret::EVENT_DEFINED, Sys::Virt::Secret::EVENT_UNDEFINED;
        },
    },
    {
        name     => 'secret value',
        what     => 'secret event callback',
        register => sub {
            $conn->secret_event_register_any(
                undef, Sys::Virt::Secret::EVENT_ID_VALUE_CHANGED, $_[0]);
        },
        release  => sub { $conn->secret_event_deregister_any($_[0]) },
        act      => sub {
            my $secret = $conn->define_secret($SECRET_XML);
            my $uuid = $secret->get_uuid_string;
            $secret->set_value($_) for qw(one two);
            $secret->undefine;
            return ($uuid) x 2;
        },
    },
);

# Lets libvirt's queued events (if any) arrive, for a bounded time.
# Returns the error that came out of the loop, or ''.
sub settle {
    my ($seconds) = @_;
    return error_of { $loop->run_until(sub { 0 }, $seconds // 0.3) };
}

for my $reg (@REGISTRATIONS) {
    my $t = $reg->{name};
    SKIP: {
        my (@events, @reports, $released);
        local ($Sys::Virt::Event::DIED, $SIG{__WARN__});
        collect_reports(\@reports, 1);
        my $callback = do {
            my $guard = Guard->new(\$released);
            sub {
                $guard->{calls}++;      # the callback holds the guard
                push @events, describe(@_[1 .. $#_]);
                die "the first $reg->{what} dies\n" if @events == 1;
            };
        };
        my $id = eval { $reg->{register}->($callback) };
        skip("$t: libvirt's test driver does not deliver these events: " . one_line($@), 7)
            unless defined $id;
        undef $callback;

        my @expected = eval { $reg->{act}->() };
        if (!@expected) {
            my $why = one_line($@);
            $reg->{release}->($id);
            skip("$t: libvirt's test driver cannot make these events: $why", 7);
        }
        my $error = error_of { $loop->run_until(sub { @events >= @expected }, 5) };
        $error ||= settle(0.2);
        is($error, '', "$t: the die does not come out of the loop");
        is_deeply(\@events, \@expected, "$t: the whole batch arrives");
        is(tidy(@reports), "Sys::Virt $reg->{what}: the first $reg->{what} dies",
           "$t: the die is reported once, as the $reg->{what}'s");

        $reg->{release}->($id);
        is($released, 1, "$t: deregistering releases the callback");
        @events = ();
        ok(eval { $reg->{act}->(); 1 }, "$t: the events are made again") or diag $@;
        settle();
        is_deeply(\@events, [], "$t: after deregistration the callback is not called");
        is(tidy(@reports[1 .. $#reports]), '', "$t: nothing else was reported");
    }
}

# -- the legacy domain_event_register ------------------------------------------
{
    my $t = 'domain_event_register';
    my (@events, @reports, $released);
    local ($Sys::Virt::Event::DIED, $SIG{__WARN__});
    collect_reports(\@reports, 1);
    {
        my $guard = Guard->new(\$released);
        $conn->domain_event_register(sub {
            $guard->{calls}++;
            push @events, lifecycle(@_[2, 3]);
            die "$FIRST_DIES\n" if @events == 1;
        });
    }
    $dom->destroy;
    $dom->create;
    my $error = error_of { $loop->run_until(sub { @events >= 2 }, 5) };
    $error ||= settle(0.2);
    is($error, '', "$t: the die does not come out of the loop");
    is(join(',', @events), join(',', @DESTROY_CREATE), "$t: both events of the batch arrive");
    is(tidy(@reports), "Sys::Virt domain event callback: $FIRST_DIES",
       "$t: the die is reported once");
    $conn->domain_event_deregister;
    is($released, 1, "$t: domain_event_deregister releases the callback");
    @events = ();
    $dom->destroy;
    $dom->create;
    settle();
    is_deeply(\@events, [], "$t: after domain_event_deregister nothing arrives");
}

# -- one coderef, registered three times -------------------------------------
# For the lifecycle and the metadata events of one connection, and the
# lifecycle events of a second one; every call dies.
{
    my $t = 'one coderef, three registrations';
    my $conn2 = Sys::Virt->new(uri => $URI);
    my %name_of = (Scalar::Util::refaddr($conn)  => 'conn1',
                   Scalar::Util::refaddr($conn2) => 'conn2');
    my (@calls, @reports);
    local ($Sys::Virt::Event::DIED, $SIG{__WARN__});
    collect_reports(\@reports, 1);
    my $shared = sub {
        my ($c, undef, @args) = @_;
        push @calls, join ' ', $name_of{Scalar::Util::refaddr($c)} // 'unknown connection',
            map { $_ // 'undef' } @args;
        die "every call dies\n";
    };
    my $lifecycle = Sys::Virt::Domain::EVENT_ID_LIFECYCLE;
    my @ids = (
        [$conn, $conn->domain_event_register_any(undef, $lifecycle, $shared)],
        [$conn, $conn->domain_event_register_any(
            undef, Sys::Virt::Domain::EVENT_ID_METADATA_CHANGE, $shared)],
        [$conn2, $conn2->domain_event_register_any(undef, $lifecycle, $shared)],
    );
    $dom->destroy;
    $dom->set_metadata(Sys::Virt::Domain::METADATA_DESCRIPTION, 'protected', undef, undef, 0);
    $dom->create;
    my $metadata = join ' ', 'conn1', Sys::Virt::Domain::METADATA_DESCRIPTION, 'undef';
    my @lifecycle = map { "@$_" } @DESTROY_CREATE_ARGS;
    my @expected = sort((map { ("conn1 $_", "conn2 $_") } @lifecycle), $metadata);
    my $error = error_of { $loop->run_until(sub { @calls >= @expected }, 5) };
    $error ||= settle(0.2);
    is($error, '', "$t: the dies do not come out of the loop");
    is_deeply([sort @calls], \@expected, "$t: each registration delivers each of its events");
    is_deeply(\@reports, [("Sys::Virt domain event callback: every call dies\n") x @expected],
              "$t: each die is reported, as a domain event callback's, through \$DIED");

    $conn->domain_event_deregister_any($ids[0][1]);
    @calls = ();
    $dom->destroy;
    $dom->create;
    $error = error_of { $loop->run_until(sub { @calls >= 2 }, 5) };
    $error ||= settle(0.2);
    is($error, '', "$t: with the first deregistered, the dies do not come out of the loop");
    is_deeply(\@calls, [map { "conn2 $_" } @lifecycle],
              "$t: and the other connection's registration still delivers");
    $_->[0]->domain_event_deregister_any($_->[1]) for @ids[1, 2];
    @calls = ();
    $dom->destroy;
    $dom->set_metadata(Sys::Virt::Domain::METADATA_DESCRIPTION, 'again', undef, undef, 0);
    $dom->create;
    settle();
    is_deeply(\@calls, [], "$t: with all deregistered, nothing arrives");
}

# -- a local stream (the test driver's screenshot) -----------------------------

SKIP: {
    my $image = eval { screenshot_blocking($conn) };
    skip('the test driver cannot send a screenshot: ' . one_line($@), 5) unless defined $image;
    check_stream('TestLoop, local stream', dying_stream($loop, $conn, $image));
}

# -- and nothing is left -------------------------------------------------------

undef $dom;
undef $conn;
$loop->drain;
ok($loop->is_idle, 'everything libvirt added to the loop is removed')
    or diag($loop->watches . ' watches, ' . $loop->timers . ' timers left');
is(Sys::Virt::Event::_pending_frees(), 0, 'and freed');

# The wrapper holds the program's callback no longer than Sys::Virt does:
# a callback made by the call's own argument expression is released when
# it is deregistered, in a block and in a loop, as without this module.
{
    my $r = run_case('callbacks released at deregistration', sub {
        {
            package Released;
            sub new { return bless { name => $_[1] }, $_[0] }
            sub DESTROY { print "released $_[0]{name}\n" }
        }
        my $make = sub { my $g = Released->new($_[0]); return sub { my $keep = $g; 0 } };
        # (the loop of this file's process, inherited, serves libvirt)
        my $conn = Sys::Virt->new(uri => 'test:///default');
        {
            my $id = $conn->domain_event_register_any(undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE(),
                                                      $make->('block'));
            $conn->domain_event_deregister_any($id);
            print "deregistered block\n";
        }
        for my $n (1 .. 2) {
            my $id = $conn->network_event_register_any(undef, Sys::Virt::Network::EVENT_ID_LIFECYCLE(),
                                                       $make->("loop $n"));
            $conn->network_event_deregister_any($id);
            print "deregistered loop $n\n";
        }
        print "usage: ", error_of { $conn->domain_event_register_any(undef) }, "\n";
    });
    is(join('|', $r->{''} =~ /^((?:released|deregistered) .*)$/mg),
       'released block|deregistered block|released loop 1|deregistered loop 1|released loop 2|deregistered loop 2',
       'each callback is released by its deregistration');
    like($r->{''}, qr/^usage: Usage: Sys::Virt::domain_event_register_any\(.*\) at \Q${\ __FILE__}\E line \d+\.$/m,
         "a usage error names the caller's line, not the wrapper's");
}

# A registration libvirt refuses (test:///default has no secret events)
# leaves nothing behind: Sys::Virt 9.0.0 keeps its references to the
# connection and the callback then, and without this module the
# connection is never closed.
{
    my $r = run_case('a refused registration keeps nothing', sub {
        {
            package Gone;
            sub new { return bless {}, $_[0] }
            sub DESTROY { print "callback released\n" }
        }
        # as a program does: the connection in a variable of a scope that ends
        my $weak;
        {
            my $conn = Sys::Virt->new(uri => 'test:///default');
            my $guard = Gone->new;
            my $error = error_of {
                $conn->secret_event_register_any(undef, 0, sub { my $keep = $guard; 0 })
            };
            print 'refused: ', ($error ? 'yes' : 'no'), "\n";
            Scalar::Util::weaken($weak = $conn);
        }
        print 'connection freed: ', ($weak ? 'no' : 'yes'), "\n";
    });
    like($r->{''}, qr/^refused: yes$/m, 'test:///default refuses secret events');
    like($r->{''}, qr/^callback released$/m, 'the refused callback is released');
    like($r->{''}, qr/^connection freed: yes$/m, 'and the connection is freed when the program drops it');
}

done_testing;

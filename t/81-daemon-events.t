use strict;
use warnings;

# A real libvirt daemon (private, unprivileged, t/lib/PrivateLibvirtd.pm),
# reached through libvirt's remote driver, with the event loop in Perl:
# domain lifecycle events arrive over the socket, and a stream (a domain
# screenshot, the one stream the test driver offers) is read from its
# event callback.  Afterwards everything the connection added to the loop
# is removed and freed.  Each case runs in a child, under each loop kind
# (t/lib/DaemonCase.pm).

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use TestUtil qw(have_sys_virt);
use PrivateLibvirtd;

BEGIN {
    plan skip_all => 'Sys::Virt is not installed' unless have_sys_virt();
    my $why = PrivateLibvirtd::unavailable();
    plan skip_all => "no private libvirtd: $why" if $why;
}

use Sys::Virt;
use Sys::Virt::Event;
use Time::HiRes qw(time);
use DaemonCase qw(loop_kinds run_case report elapsed_ms lifecycle_recorder
                  connect_noting_sockets sockets_still_open);

my $DOM = 'test';
# the test driver's screenshot is this file, sent by the daemon
my $SCREENSHOT = '/usr/share/libvirt/test-screenshot.png';

my @LIFECYCLE = (
    [destroy => sub { $_[0]->destroy },
     Sys::Virt::Domain::EVENT_STOPPED, Sys::Virt::Domain::EVENT_STOPPED_DESTROYED],
    [create => sub { $_[0]->create },
     Sys::Virt::Domain::EVENT_STARTED, Sys::Virt::Domain::EVENT_STARTED_BOOTED],
    [suspend => sub { $_[0]->suspend },
     Sys::Virt::Domain::EVENT_SUSPENDED, Sys::Virt::Domain::EVENT_SUSPENDED_PAUSED],
    [resume => sub { $_[0]->resume },
     Sys::Virt::Domain::EVENT_RESUMED, Sys::Virt::Domain::EVENT_RESUMED_UNPAUSED],
);

# Drops the connection and reports whether the loop is left idle and the
# connection's sockets closed (their free functions ran).
sub finish_connection {
    my ($loop, $conn_ref, $sockets) = @_;
    undef $$conn_ref;
    $loop->drain;
    report(idle          => $loop->is_idle ? 1 : 0,
           left          => $loop->watches . ' watches, ' . $loop->timers . ' timers',
           sockets_open  => sockets_still_open($sockets));
    return;
}

sub lifecycle_case {
    my ($d, $kind) = @_;
    local $SIG{PIPE} = 'IGNORE';
    my $loop = DaemonCase->loop($kind);
    my ($conn, $sockets) = connect_noting_sockets($d->uri);
    report(uri => $conn->get_uri, sockets => scalar @$sockets);

    my $dom = $conn->get_domain_by_name($DOM);
    my @events;
    my $id = $conn->domain_event_register_any(undef,
        Sys::Virt::Domain::EVENT_ID_LIFECYCLE, lifecycle_recorder(\@events));
    report(watches => $loop->watches);
    for my $step (@LIFECYCLE) {
        my ($action, $do) = @$step;
        @events = ();
        my $t0 = time;
        $do->($dom);
        $loop->run_until(sub { @events }, 5);
        my $ms = elapsed_ms($t0);
        $loop->run_until(sub { @events > 1 }, 0.2);    # nothing more comes
        report("$action.events" => join(', ', @events), "$action.ms" => $ms);
    }

    $conn->domain_event_deregister_any($id);
    @events = ();
    $dom->destroy;
    $dom->create;
    $loop->run_until(sub { @events }, 0.5);
    report(after_deregister => scalar @events);

    undef $dom;
    finish_connection($loop, \$conn, $sockets);
    return;
}

sub stream_case {
    my ($d, $kind) = @_;
    local $SIG{PIPE} = 'IGNORE';
    my $loop = DaemonCase->loop($kind);
    my ($conn, $sockets) = connect_noting_sockets($d->uri);
    my $dom = $conn->get_domain_by_name($DOM);
    my $timers = $loop->timers;

    # read it all from the stream's event callback
    my $st = $conn->new_stream(Sys::Virt::Stream::NONBLOCK);
    report(mime => $dom->screenshot($st, 0));
    my ($data, $done, $calls, $mask, $most_timers) = ('', 0, 0, 0, 0);
    $st->add_callback(Sys::Virt::Stream::EVENT_READABLE, sub {
        my ($s, $events) = @_;
        eval {
            $calls++;
            $mask |= $events;
            $most_timers = $loop->timers if $loop->timers > $most_timers;
            while (1) {
                my $n = $s->recv(my $buf, 16384);
                last if $n == -2;                   # nothing more for now
                die "recv returned $n\n" if $n < 0;
                if ($n == 0) {                      # end of stream
                    $s->remove_callback;
                    $s->finish;
                    $done = 1;
                    last;
                }
                $data .= $buf;
            }
            1;
        } or do { report(stream_error => $@); $done = -1 };
    });
    $loop->run_until(sub { $done }, 5);
    report(done => $done, calls => $calls, mask => $mask, bytes => length $data,
           stream_timers => $most_timers - $timers,
           png => substr($data, 0, 8) eq "\x89PNG\r\n\x1a\n" ? 1 : 0);
    if (open my $fh, '<:raw', $SCREENSHOT) {
        local $/;
        report(same_as_file => $data eq <$fh> ? 1 : 0);
    }
    undef $st;
    $loop->drain;
    report(timers_after_finish => $loop->timers - $timers);

    # a stream aborted from its first callback calls back no more, and
    # the connection goes on working
    $st = $conn->new_stream(Sys::Virt::Stream::NONBLOCK);
    $dom->screenshot($st, 0);
    my $aborted_calls = 0;
    $st->add_callback(Sys::Virt::Stream::EVENT_READABLE, sub {
        my ($s) = @_;
        $aborted_calls++;
        eval { $s->remove_callback; $s->abort; 1 } or report(abort_error => $@);
    });
    $loop->run_until(sub { $aborted_calls }, 5);
    $loop->run_until(sub { $aborted_calls > 1 }, 0.3);
    undef $st;
    $loop->drain;
    report(aborted_calls => $aborted_calls,
           timers_after_abort => $loop->timers - $timers,
           rpc_after_abort => eval { $dom->get_name } // "failed: $@");

    undef $dom;
    finish_connection($loop, \$conn, $sockets);
    return;
}

sub check_finish {
    my ($t, $r) = @_;
    is($r->{idle}, 1, "$t: the loop is idle once the connection is dropped")
        or diag("left: $r->{left}");
    is($r->{sockets_open}, 0, "$t: the connection's socket is closed (its watch was freed)");
}

my %timing;
for my $entry (loop_kinds()) {
    my ($kind, $missing) = @$entry;
    SKIP: {
        skip("$kind: $missing", 1) if $missing;

        my $d = PrivateLibvirtd->start;
        my $r = run_case("$kind lifecycle", sub { lifecycle_case($d, $kind) });
        my $t = "$kind lifecycle";
        is($r->{uri}, $d->uri, "$t: connected to the private daemon");
        is($r->{sockets}, 1, "$t: over one socket (the remote driver)");
        ok($r->{watches} >= 1, "$t: libvirt watches the socket through the loop");
        for my $step (@LIFECYCLE) {
            my ($action, undef, $event, $detail) = @$step;
            is($r->{"$action.events"}, "$DOM $event $detail",
               "$t: $action: exactly one event, with the right domain, event and detail");
        }
        is($r->{after_deregister}, 0, "$t: nothing arrives after deregistration");
        check_finish($t, $r);
        $timing{$kind}{event} = join '/', map { $r->{"$_->[0].ms"} // '?' } @LIFECYCLE;
        undef $d;

        $d = PrivateLibvirtd->start;
        $r = run_case("$kind stream", sub { stream_case($d, $kind) });
        $t = "$kind stream";
        is($r->{mime}, 'image/png', "$t: the screenshot is a PNG stream");
        is($r->{done}, 1, "$t: read to its end from the event callback")
            or diag($r->{stream_error} // '');
        ok($r->{calls} >= 1, "$t: the callback was called ($r->{calls} times)");
        ok($r->{mask} & Sys::Virt::Stream::EVENT_READABLE,
           "$t: with EVENT_READABLE");
        ok($r->{stream_timers} >= 1, "$t: libvirt drove the stream with a timer in the loop");
        ok($r->{bytes} > 0, "$t: data arrived ($r->{bytes} bytes)");
        is($r->{png}, 1, "$t: it starts with the PNG signature");
        SKIP: {
            skip("$SCREENSHOT is not readable here", 1) unless exists $r->{same_as_file};
            is($r->{same_as_file}, 1, "$t: byte for byte the test driver's screenshot");
        }
        is($r->{timers_after_finish}, 0, "$t: the stream's timer is gone after finish");
        is($r->{aborted_calls}, 1, "$t: an aborted stream calls back no more");
        is($r->{timers_after_abort}, 0, "$t: and its timer is gone");
        is($r->{rpc_after_abort}, $DOM, "$t: the connection still works after the abort");
        check_finish($t, $r);
        undef $d;
    }
}

diag(sprintf 'remote lifecycle event delays (destroy/create/suspend/resume), %s: %s ms',
             $_, $timing{$_}{event})
    for sort keys %timing;

done_testing;

use strict;
use warnings;

# Faults of a real libvirt daemon (private, unprivileged,
# t/lib/PrivateLibvirtd.pm) while a Perl event loop runs the connection:
#   - SIGKILL: the close callback comes within 1 s with reason EOF, and all
#     the connection put in the loop is removed and freed;
#   - a restart in the same directory: a new connection gets events again;
#   - SIGSTOP with keepalive (1 s, 2 probes): the close callback comes
#     within 5 s with reason KEEPALIVE.
# Each case runs in a child, under each loop kind (t/lib/DaemonCase.pm).
# The delays seen are printed with diag().

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
use DaemonCase qw(loop_kinds run_case report elapsed_ms
                  lifecycle_recorder);

my $DOM = 'test';
my $EOF = Sys::Virt::CLOSE_REASON_EOF;
my $KEEPALIVE = Sys::Virt::CLOSE_REASON_KEEPALIVE;
my $DESTROYED = join ' ', $DOM, Sys::Virt::Domain::EVENT_STOPPED,
                          Sys::Virt::Domain::EVENT_STOPPED_DESTROYED;

# A connection with a close callback and lifecycle events, as the cases
# use it, and the sockets it opened; ->drop deregisters both callbacks
# before dropping the connection, since they hold references to it.
{
    package Watched;

    use DaemonCase qw(report lifecycle_recorder connect_noting_sockets
                      sockets_still_open);

    sub new {
        my ($class, $loop, $uri) = @_;
        my $self = bless { loop => $loop, events => [], closed => [] }, $class;
        @$self{qw(conn sockets)} = connect_noting_sockets($uri);
        my $closed = $self->{closed};
        $self->{conn}->register_close_callback(sub {
            push @$closed, [$_[1], Time::HiRes::time()];
        });
        $self->{event_id} = $self->{conn}->domain_event_register_any(undef,
            Sys::Virt::Domain::EVENT_ID_LIFECYCLE, lifecycle_recorder($self->{events}));
        return $self;
    }

    sub conn   { return $_[0]{conn} }
    sub closed { return $_[0]{closed} }

    # Destroys the domain and waits for its event; the event, or ''.
    sub destroy_event {
        my ($self) = @_;
        @{$self->{events}} = ();
        $self->{conn}->get_domain_by_name($DOM)->destroy;
        $self->{loop}->run_until(sub { @{$self->{events}} }, 5);
        return join ', ', @{$self->{events}};
    }

    # Reports the errors of the deregistrations, if any, under "$prefix.".
    sub drop {
        my ($self, $prefix) = @_;
        # on a dead connection these may fail; they must not hang or kill
        eval { $self->{conn}->domain_event_deregister_any($self->{event_id}); 1 }
            or report("$prefix.deregister_error" => $@);
        eval { $self->{conn}->unregister_close_callback; 1 }
            or report("$prefix.unregister_error" => $@);
        delete $self->{conn};
        return;
    }

    sub sockets_open { return sockets_still_open($_[0]{sockets}) }
}

# Sends $sig to the daemon from a timer in the loop, $ms from now, so the
# fault hits while the loop runs.  Returns a reference to the time it was
# sent (undef until then).  The timer removes itself.
sub signal_from_loop {
    my ($d, $sig, $ms) = @_;
    my ($sent, $timer);
    $timer = Sys::Virt::Event::add_timeout($ms, sub {
        Sys::Virt::Event::remove_timeout($timer);
        $sent = time if $d->signal($sig);
    });
    return \$sent;
}

sub report_idle {
    my ($loop, @watched) = @_;
    $loop->drain;
    my $open = 0;
    $open += $_->sockets_open for @watched;
    report(idle         => $loop->is_idle ? 1 : 0,
           left         => $loop->watches . ' watches, ' . $loop->timers . ' timers',
           sockets_open => $open);
    return;
}

sub kill_case {
    my ($d, $kind) = @_;
    local $SIG{PIPE} = 'IGNORE';
    my $loop = DaemonCase->loop($kind);
    my $w = Watched->new($loop, $d->uri);
    report(sockets => scalar @{$w->{sockets}}, before => $w->destroy_event,
           watches_before => $loop->watches);

    my $sent = signal_from_loop($d, 'KILL', 50);
    $loop->run_until(sub { @{$w->closed} }, 5);
    my $closed = $w->closed;
    report(signalled => $$sent ? 1 : 0,
           close_reason => @$closed ? $closed->[0][0] : 'none',
           close_ms => @$closed && $$sent ? elapsed_ms($$sent, $closed->[0][1]) : 'never');
    $loop->run_until(sub { @$closed > 1 }, 0.2);
    report(close_calls => scalar @$closed,
           daemon_gone => $d->wait_gone(2) ? 1 : 0,
           watches_after_close => $loop->watches,
           sockets_after_close => $w->sockets_open);

    my $ok = eval { $w->conn->get_domain_by_name($DOM)->destroy; 1 };
    (my $error = $ok ? 'none' : "$@") =~ s/\n.*//s;
    report(rpc_after_close => $error);

    $w->drop('drop');
    report_idle($loop, $w);
    return;
}

sub restart_case {
    my ($d, $kind) = @_;
    local $SIG{PIPE} = 'IGNORE';
    my $loop = DaemonCase->loop($kind);
    my $old = Watched->new($loop, $d->uri);
    report(before => $old->destroy_event);

    my $t0 = time;
    $d->restart;
    my $ready = time;
    my $new = Watched->new($loop, $d->uri);
    report(after => $new->destroy_event,
           restart_ms => elapsed_ms($t0, $ready), restart_to_event_ms => elapsed_ms($t0));

    $loop->run_until(sub { @{$old->closed} }, 5);
    report(old_closed => scalar @{$old->closed},
           old_reason => @{$old->closed} ? $old->closed->[0][0] : 'none',
           new_closed => scalar @{$new->closed},
           watches => $loop->watches);

    $_->drop('drop') for $old, $new;
    report_idle($loop, $old, $new);
    return;
}

sub keepalive_case {
    my ($d, $kind) = @_;
    local $SIG{PIPE} = 'IGNORE';
    my $loop = DaemonCase->loop($kind);
    my $w = Watched->new($loop, $d->uri);
    my $timers = $loop->timers;
    $w->conn->set_keep_alive(1, 2);
    report(keepalive_timers => $loop->timers - $timers, before => $w->destroy_event);

    my $sent = signal_from_loop($d, 'STOP', 50);
    $loop->run_until(sub { @{$w->closed} }, 8);
    my $closed = $w->closed;
    report(signalled => $$sent ? 1 : 0,
           close_reason => @$closed ? $closed->[0][0] : 'none',
           close_ms => @$closed && $$sent ? elapsed_ms($$sent, $closed->[0][1]) : 'never');
    $d->signal('CONT');
    $loop->run_until(sub { @$closed > 1 }, 0.2);
    report(close_calls => scalar @$closed, watches_after_close => $loop->watches);

    $w->drop('drop');
    report_idle($loop, $w);
    return;
}

sub check_idle {
    my ($t, $r) = @_;
    is($r->{'drop.deregister_error'}, undef, "$t: deregistering events works on the closed connection");
    is($r->{'drop.unregister_error'}, undef, "$t: so does unregistering the close callback");
    is($r->{idle}, 1, "$t: after the drop and a drain the loop is idle")
        or diag("left: $r->{left}");
    is($r->{sockets_open}, 0, "$t: the sockets are closed: every watch was freed");
}

my %timing;
for my $entry (loop_kinds()) {
    my ($kind, $missing) = @$entry;
    SKIP: {
        skip("$kind: $missing", 1) if $missing;

        my $d = PrivateLibvirtd->start;
        my $t = "$kind SIGKILL";
        my $r = run_case($t, sub { kill_case($d, $kind) });
        is($r->{sockets}, 1, "$t: the connection has one socket");
        is($r->{before}, $DESTROYED, "$t: events flowed before the fault");
        ok($r->{watches_before} >= 1, "$t: the socket was watched through the loop");
        is($r->{signalled}, 1, "$t: a timer in the loop killed the daemon");
        is($r->{close_reason}, $EOF, "$t: the close callback reports EOF");
        my $ms = $r->{close_ms} // 'never';
        ok($ms ne 'never' && $ms <= 1000, "$t: within 1 s ($ms ms)");
        is($r->{close_calls}, 1, "$t: once");
        is($r->{daemon_gone}, 1, "$t: the daemon is gone");
        is($r->{watches_after_close}, 0, "$t: libvirt removed the socket's watch on its own");
        is($r->{sockets_after_close}, 0, "$t: and the watch was freed: the socket is closed");
        like($r->{rpc_after_close}, qr/libvirt error/,
             "$t: a call on the dead connection fails with a libvirt error");
        check_idle($t, $r);
        $timing{$kind}{kill} = $ms;
        undef $d;

        $d = PrivateLibvirtd->start;
        $t = "$kind restart";
        $r = run_case($t, sub { restart_case($d, $kind) });
        is($r->{before}, $DESTROYED, "$t: events flowed before the restart");
        is($r->{after}, $DESTROYED, "$t: a new connection gets events again");
        is($r->{old_closed}, 1, "$t: the old connection's close callback was called once");
        is($r->{old_reason}, $EOF, "$t: with reason EOF");
        is($r->{new_closed}, 0, "$t: the new one's was not");
        is($r->{watches}, 1, "$t: the loop watches the new socket only");
        check_idle($t, $r);
        $timing{$kind}{restart} = ($r->{restart_to_event_ms} // '?')
            . ' (daemon ready after ' . ($r->{restart_ms} // '?') . ')';
        undef $d;

        $d = PrivateLibvirtd->start;
        $t = "$kind keepalive";
        $r = run_case($t, sub { keepalive_case($d, $kind) }, timeout => 20);
        is($r->{before}, $DESTROYED, "$t: events flowed before the fault");
        is($r->{keepalive_timers}, 1, "$t: set_keep_alive added a timer to the loop");
        is($r->{signalled}, 1, "$t: a timer in the loop stopped the daemon");
        is($r->{close_reason}, $KEEPALIVE, "$t: the close callback reports KEEPALIVE");
        $ms = $r->{close_ms} // 'never';
        ok($ms ne 'never' && $ms <= 5000, "$t: within 5 s ($ms ms)");
        is($r->{close_calls}, 1, "$t: once");
        is($r->{watches_after_close}, 0, "$t: libvirt removed the socket's watch");
        check_idle($t, $r);
        $timing{$kind}{keepalive} = $ms;
        undef $d;
    }
}

for my $kind (sort keys %timing) {
    my $t = $timing{$kind};
    diag("$kind: SIGKILL -> close callback $t->{kill} ms; "
         . "SIGSTOP -> keepalive close $t->{keepalive} ms; "
         . "restart -> first event $t->{restart} ms");
}

done_testing;

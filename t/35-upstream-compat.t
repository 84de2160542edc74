use strict;
use warnings;

# An event loop written the way Sys::Virt 9.0.0 users wrote them runs
# unchanged: `use base qw(Sys::Virt::Event)`, a select() loop keeping
# arrays of handle hashes, fully qualified Sys::Virt::Event::HANDLE_*
# constants, the helpers called as methods, and _free_callback_opaque
# called inside remove_handle/remove_timeout.  The same loop is run again
# as a subclass of the newer Sys::Virt::EventImpl.  libvirt accepts one
# loop per process, so each runs in a child process that reports what
# happened; the assertions are made here.

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes ();
use TestUtil qw(in_child have_sys_virt);

BEGIN {
    plan skip_all => 'Sys::Virt is not installed' unless have_sys_virt();
}

use Sys::Virt;
use Sys::Virt::Event ();

# The loop, as such a program has it.
my $SIMPLE = <<'END_OF_LOOP';
package Sys::Virt::Event::Simple;

use strict;
use warnings;

use Time::HiRes qw(gettimeofday);

use base qw(Sys::Virt::Event);

sub new {
    my $proto = shift;
    my $class = ref($proto) || $proto;
    my $self = {};

    $self->{nexthandle} = 1;
    $self->{handles} = [];
    $self->{nexttimeout} = 1;
    $self->{timeouts} = [];

    bless $self, $class;

    $self->register;

    return $self;
}

sub _now {
    my @now = gettimeofday;
    return $now[0] * 1000 + int($now[1] / 1000);
}

sub _bits {
    my $self = shift;
    my $event = shift;
    my $vec = '';
    my $count = 0;

    foreach my $handle (@{$self->{handles}}) {
        next unless $handle->{events} & $event;
        $count++;
        vec($vec, $handle->{fd}, 1) = 1;
    }
    return ($vec, $count);
}

sub _timeout {
    my $self = shift;
    my $now = shift;
    my $ret = undef;

    foreach my $timeout (@{$self->{timeouts}}) {
        next if $timeout->{interval} == -1;
        my $wait = $timeout->{expiresAt} - $now;
        $wait = 0 if $wait < 0;
        $ret = $wait if !defined($ret) || $wait < $ret;
    }
    return $ret;
}

sub run_once {
    my $self = shift;

    my ($ri, $ric) = $self->_bits(Sys::Virt::Event::HANDLE_READABLE);
    my ($wi, $wic) = $self->_bits(Sys::Virt::Event::HANDLE_WRITABLE);
    my ($ei, $eic) = $self->_bits(Sys::Virt::Event::HANDLE_READABLE |
                                  Sys::Virt::Event::HANDLE_WRITABLE);
    my $timeout = $self->_timeout($self->_now);

    if (!$ric && !$wic && !$eic && !(defined $timeout)) {
        return;
    }

    my ($ro, $wo, $eo);
    my $n = select($ro = $ri, $wo = $wi, $eo = $ei,
                   (defined $timeout ? $timeout / 1000 : undef));

    if ($n && $n > 0) {
        $self->_dispatch_handles($ro, $wo, $eo);
    }
    $self->_dispatch_timeouts($self->_now);

    return 1;
}

sub _dispatch_handles {
    my $self = shift;
    my ($ro, $wo, $eo) = @_;

    foreach my $handle (@{$self->{handles}}) {
        my $events = 0;
        if (vec($ro, $handle->{fd}, 1)) {
            $events |= Sys::Virt::Event::HANDLE_READABLE;
        }
        if (vec($wo, $handle->{fd}, 1)) {
            $events |= Sys::Virt::Event::HANDLE_WRITABLE;
        }
        if (vec($eo, $handle->{fd}, 1)) {
            $events |= Sys::Virt::Event::HANDLE_ERROR;
        }
        if ($events) {
            $self->_run_handle_callback($handle->{watch},
                                        $handle->{fd},
                                        $events,
                                        $handle->{cb},
                                        $handle->{opaque});
        }
    }
}

sub _dispatch_timeouts {
    my $self = shift;
    my $now = shift;

    foreach my $timeout (@{$self->{timeouts}}) {
        if ($timeout->{interval} != -1 &&
            $now >= $timeout->{expiresAt}) {
            $self->_run_timeout_callback($timeout->{timer},
                                         $timeout->{cb},
                                         $timeout->{opaque});
            $timeout->{expiresAt} = $now + $timeout->{interval};
        }
    }
}

sub add_handle {
    my $self = shift;
    my $fd = shift;
    my $events = shift;
    my $cb = shift;
    my $opaque = shift;
    my $ff = shift;

    my $handle = {
        fd => $fd,
        events => $events,
        cb => $cb,
        opaque => $opaque,
        ff => $ff,
        watch => $self->{nexthandle}++,
    };
    push @{$self->{handles}}, $handle;

    return $handle->{watch};
}

sub update_handle {
    my $self = shift;
    my $watch = shift;
    my $events = shift;

    my @handle = grep { $_->{watch} == $watch } @{$self->{handles}};
    $handle[0]->{events} = $events;
}

sub remove_handle {
    my $self = shift;
    my $watch = shift;

    my @handle = grep { $_->{watch} == $watch } @{$self->{handles}};
    my @handles = grep { $_->{watch} != $watch } @{$self->{handles}};
    $self->{handles} = \@handles;

    $self->_free_callback_opaque($handle[0]->{ff},
                                 $handle[0]->{opaque});
}

sub add_timeout {
    my $self = shift;
    my $interval = shift;
    my $cb = shift;
    my $opaque = shift;
    my $ff = shift;

    my $timeout = {
        interval => $interval,
        cb => $cb,
        opaque => $opaque,
        ff => $ff,
        timer => $self->{nexttimeout}++,
        expiresAt => $self->_now() + $interval,
    };
    push @{$self->{timeouts}}, $timeout;

    return $timeout->{timer};
}

sub update_timeout {
    my $self = shift;
    my $timer = shift;
    my $interval = shift;

    my @timeout = grep { $_->{timer} == $timer } @{$self->{timeouts}};
    $timeout[0]->{interval} = $interval;
    $timeout[0]->{expiresAt} = $self->_now() + $interval;
}

sub remove_timeout {
    my $self = shift;
    my $timer = shift;

    my @timeout = grep { $_->{timer} == $timer } @{$self->{timeouts}};
    my @timeouts = grep { $_->{timer} != $timer } @{$self->{timeouts}};
    $self->{timeouts} = \@timeouts;

    $self->_free_callback_opaque($timeout[0]->{ff},
                                 $timeout[0]->{opaque});
}

1;
END_OF_LOOP

my $URI = 'test:///default';
my $DOM = 'test';

# Runs in the child: loads the loop from $source, registers it and goes
# through domain events on test:///default.  Prints "key value" lines.
sub scenario {
    my ($source) = @_;
    my @warnings;
    local $SIG{__WARN__} = sub { push @warnings, $_[0] };
    my $report = sub { print "$_[0] ", (defined $_[1] ? $_[1] : 'undef'), "\n" };

    eval "$source; 1" or die "compiling the loop: $@";
    my $ev = Sys::Virt::Event::Simple->new();
    $report->(registered => 1);
    $report->(base => join(',', @Sys::Virt::Event::Simple::ISA));

    my $conn = Sys::Virt->new(uri => $URI);
    my $dom = $conn->get_domain_by_name($DOM);
    my @events;
    my $cb = sub {
        my ($con, $d, $event, $detail) = @_;
        eval { push @events, [$con->get_uri, $d->get_name, $event, $detail]; 1 }
            or push @events, ["died: $@"];
        return 0;
    };

    # Iterations until an event arrives, at most $seconds of them
    # (run_once returns at once when nothing is registered: pace it).
    my $wait_event = sub {
        my ($seconds) = @_;
        my $deadline = Time::HiRes::time() + $seconds;
        my $runs = 0;
        until (@events) {
            last if Time::HiRes::time() > $deadline;
            $runs++;
            $ev->run_once() or Time::HiRes::sleep(0.02);
        }
        return $runs;
    };

    for my $api (qw(old any)) {
        my $id;
        if ($api eq 'old') {
            $conn->domain_event_register($cb);
        } else {
            $id = $conn->domain_event_register_any(
                undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE, $cb);
        }
        for my $action (qw(destroy create)) {
            @events = ();
            $dom->$action();
            my $runs = $wait_event->(5);
            $report->("$api.$action.runs" => $runs);
            $report->("$api.$action.events" => scalar @events);
            $report->("$api.$action.event" => join(' ', @{$events[0] || []}));
        }
        if ($api eq 'old') {
            $conn->domain_event_deregister;
        } else {
            $conn->domain_event_deregister_any($id);
        }
        @events = ();
        $dom->destroy;
        $dom->create;
        $wait_event->(1);
        $report->("$api.after_deregister.events" => scalar @events);
    }

    # A public watch through the same loop: dispatched with
    # $self->_run_handle_callback, freed inside remove_handle.
    {
        package Guard;
        our $destroyed = 0;
        sub DESTROY { $destroyed++ }
    }
    pipe(my $r, my $w) or die "pipe: $!";
    syswrite($w, 'x');
    my @fired;
    my $watch = do {
        my $guard = bless {}, 'Guard';
        Sys::Virt::Event::add_handle(fileno($r), Sys::Virt::Event::HANDLE_READABLE,
                                     sub { $guard->{calls}++; push @fired, [@_] });
    };
    $ev->run_once() for 1 .. 3;
    $report->('watch.fired' => join(' ', @{$fired[0] || []}));
    $report->('watch.expected' => join(' ', $watch, fileno($r),
                                       Sys::Virt::Event::HANDLE_READABLE));
    $report->('watch.guard_before_remove' => $Guard::destroyed);
    Sys::Virt::Event::remove_handle($watch);

    undef $dom;
    undef $conn;
    $ev->run_once() for 1 .. 3;
    $report->('watch.guard_after_remove' => $Guard::destroyed);
    $report->('dropped' => 1);
    $report->('handles_left' => scalar @{$ev->{handles}});
    $report->('timeouts_left' => scalar @{$ev->{timeouts}});
    $report->('timers_added' => $ev->{nexttimeout} - 1);
    $report->('warnings' => scalar @warnings);
    print "warning: $_" for @warnings;
    return;
}

sub parse_report {
    my ($output) = @_;
    my %r;
    for my $line (split /\n/, $output) {
        my ($key, $value) = $line =~ /^(\S+) ?(.*)\z/ or next;
        $r{$key} = $value;
    }
    return \%r;
}

my %EXPECTED = (
    destroy => [Sys::Virt::Domain::EVENT_STOPPED, Sys::Virt::Domain::EVENT_STOPPED_DESTROYED],
    create  => [Sys::Virt::Domain::EVENT_STARTED, Sys::Virt::Domain::EVENT_STARTED_BOOTED],
);

(my $impl_source = $SIMPLE) =~ s/^use base qw\(Sys::Virt::Event\);$/use base qw(Sys::Virt::EventImpl);/m;
isnt($impl_source, $SIMPLE, 'the EventImpl variant is the same loop with another base class');

for my $variant (['Sys::Virt::Event', $SIMPLE],
                 ['Sys::Virt::EventImpl', $impl_source]) {
    my ($base, $source) = @$variant;
    my $res = in_child(sub { scenario($source) }, timeout => 60);
    my $r = parse_report($res->{output});
    my $t = "base $base";

    ok(!$res->{timed_out}, "$t: finished in time (no hang)");
    is($res->{exit}, 0, "$t: exited normally")
        or diag $res->{output};
    is($r->{registered}, 1, "$t: new() registered the loop");
    is($r->{base}, $base, "$t: the loop's base class");

    for my $api (qw(old any)) {
        for my $action (qw(destroy create)) {
            my $k = "$api.$action";
            is($r->{"$k.events"}, 1, "$t: $api API: $action: one event delivered");
            is($r->{"$k.event"}, join(' ', $URI, $DOM, @{$EXPECTED{$action}}),
               "$t: $api API: $action: URI, domain, event and detail");
            is($r->{"$k.runs"}, 1, "$t: $api API: $action: in one run_once, as upstream expects");
        }
        is($r->{"$api.after_deregister.events"}, 0,
           "$t: $api API: nothing after deregistration");
    }

    is($r->{'watch.fired'}, $r->{'watch.expected'},
       "$t: a public watch dispatched by the loop gets (watch, fd, events)");
    ok(defined $r->{'watch.fired'} && length $r->{'watch.fired'},
       "$t: and it did fire");
    is($r->{'watch.guard_before_remove'}, 0, "$t: its coderef is held while live");
    is($r->{'watch.guard_after_remove'}, 1,
       "$t: freeing inside remove_handle released it, once");

    is($r->{dropped}, 1, "$t: the connection was dropped");
    ok($r->{timers_added} >= 1, "$t: libvirt added its event timer to the loop");
    is($r->{handles_left}, 0, "$t: no handles left in the loop");
    is($r->{timeouts_left}, 0, "$t: no timeouts left in the loop");
    is($r->{warnings}, 0, "$t: no warnings")
        or diag $res->{output};
    my @stray = grep { length && !/^[\w.]+ / && !/^warning: / }
        split /\n/, $res->{output};
    is_deeply(\@stray, [], "$t: nothing else printed");
}

done_testing;

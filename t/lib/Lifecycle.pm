package Lifecycle;

# Domain lifecycle steps on libvirt's test driver, and a callback that
# records the events they produce: shared by the tests that check event
# delivery through a loop.

use strict;
use warnings;

use Exporter 'import';

our @EXPORT_OK = qw(lifecycle_steps event_recorder check_lifecycle);

# [name, action, expected event, expected detail] for each step, in an
# order that brings a running domain back to running.
sub lifecycle_steps {
    my ($dom) = @_;
    return (
        [destroy => sub { $dom->destroy },
         Sys::Virt::Domain::EVENT_STOPPED(), Sys::Virt::Domain::EVENT_STOPPED_DESTROYED()],
        [create => sub { $dom->create },
         Sys::Virt::Domain::EVENT_STARTED(), Sys::Virt::Domain::EVENT_STARTED_BOOTED()],
        [suspend => sub { $dom->suspend },
         Sys::Virt::Domain::EVENT_SUSPENDED(), Sys::Virt::Domain::EVENT_SUSPENDED_PAUSED()],
        [resume => sub { $dom->resume },
         Sys::Virt::Domain::EVENT_RESUMED(), Sys::Virt::Domain::EVENT_RESUMED_UNPAUSED()],
    );
}

# A lifecycle callback that pushes {api, uri, name, event, detail} onto
# @$events (or {api, error}), and never lets an exception unwind through
# Sys::Virt and libvirt.
sub event_recorder {
    my ($events, $api) = @_;
    return sub {
        my ($c, $d, $event, $detail) = @_;
        eval {
            push @$events, {
                api    => $api,
                uri    => $c->get_uri,
                name   => $d->get_name,
                event  => $event,
                detail => $detail,
            };
            1;
        } or push @$events, { api => $api, error => "$@" };
        return 0;
    };
}

# check_lifecycle(api => NAME, steps => [lifecycle_steps], events => \@events,
#                 run_until => sub { my ($cond, $seconds) = @_; ... },
#                 through => 'the loop', uri => URI, domain => NAME)
# Does each step and asserts (Test::More) the one event it produces, as
# recorded by event_recorder.
sub check_lifecycle {
    my (%a) = @_;
    my ($api, $events) = @a{qw(api events)};
    for my $step (@{$a{steps}}) {
        my ($action, $do, $event, $detail) = @$step;
        @$events = ();
        $do->();
        Test::More::ok($a{run_until}->(sub { @$events }, 5),
                       "$api: $action: an event arrives through $a{through}");
        Test::More::is(scalar @$events, 1, "$api: $action: exactly one event");
        Test::More::is_deeply($events->[0],
                              { api => $api, uri => $a{uri}, name => $a{domain},
                                event => $event, detail => $detail },
                              "$api: $action: connection, domain, event and detail");
    }
    return;
}

1;

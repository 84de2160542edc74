#!/usr/bin/perl
# Register libvirt's default event loop, open the in-process test driver,
# and print domain lifecycle events as they are delivered while the test
# domain is stopped, started, paused and resumed.

use strict;
use warnings;

use Sys::Virt;
use Sys::Virt::Event;

Sys::Virt::Event::register_default();

my $uri = shift // 'test:///default';
my $conn = Sys::Virt->new(uri => $uri);
my $dom = $conn->get_domain_by_name('test');

my %event_name = (
    Sys::Virt::Domain::EVENT_DEFINED()     => 'defined',
    Sys::Virt::Domain::EVENT_UNDEFINED()   => 'undefined',
    Sys::Virt::Domain::EVENT_STARTED()     => 'started',
    Sys::Virt::Domain::EVENT_SUSPENDED()   => 'suspended',
    Sys::Virt::Domain::EVENT_RESUMED()     => 'resumed',
    Sys::Virt::Domain::EVENT_STOPPED()     => 'stopped',
    Sys::Virt::Domain::EVENT_SHUTDOWN()    => 'shutdown',
    Sys::Virt::Domain::EVENT_PMSUSPENDED() => 'pmsuspended',
    Sys::Virt::Domain::EVENT_CRASHED()     => 'crashed',
);

my $seen = 0;
my $id = $conn->domain_event_register_any(
    undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE,
    sub {
        my ($conn, $dom, $event, $detail) = @_;
        printf "%s: %s (event %d, detail %d)\n", $dom->get_name,
            $event_name{$event} // 'unknown', $event, $detail;
        $seen++;
    });

# A timer keeps run_default() from blocking once everything is quiet.
my $tick = Sys::Virt::Event::add_timeout(100, sub { });

my @steps = (sub { $dom->destroy }, sub { $dom->create },
             sub { $dom->suspend }, sub { $dom->resume });
for my $step (@steps) {
    my $want = $seen + 1;
    $step->();
    my $deadline = time + 5;
    Sys::Virt::Event::run_default() while $seen < $want && time < $deadline;
    die "no event within 5 seconds\n" if $seen < $want;
}

$conn->domain_event_deregister_any($id);
Sys::Virt::Event::remove_timeout($tick);
print "$seen lifecycle events delivered\n";

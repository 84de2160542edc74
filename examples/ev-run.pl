#!/usr/bin/perl
# libvirt's events in C on EV's loop (Sys::Virt::Event::EV), run by
# EV::run: prints the test domain's lifecycle events while it is
# stopped, started, paused and resumed, then stops.
#
#   perl examples/ev-run.pl [URI]        (default: test:///default)

use strict;
use warnings;

use EV;
use Sys::Virt;
use Sys::Virt::Event::EV;

Sys::Virt::Event::EV->register;             # before opening connections

my $conn = Sys::Virt->new(uri => shift // 'test:///default');
my $dom = $conn->get_domain_by_name('test');
my @steps = (sub { $dom->destroy }, sub { $dom->create },
             sub { $dom->suspend }, sub { $dom->resume });

$conn->domain_event_register_any(undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE,
    sub {
        my ($conn, $dom, $event, $detail) = @_;
        printf "%s: lifecycle event %d, detail %d\n", $dom->get_name, $event, $detail;
        # the next step, from the loop rather than inside libvirt's callback
        my $next = shift @steps;
        EV::once(undef, 0, 0, $next ? sub { $next->() } : sub { EV::break });
    });

my $timeout = EV::timer(5, 0, sub { die "no event within 5 seconds\n" });
(shift @steps)->();
EV::run;

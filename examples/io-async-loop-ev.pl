#!/usr/bin/perl
# The same in an IO::Async program: IO::Async::Loop::EV (from CPAN) runs
# IO::Async on EV's default loop, where the native loop's watchers live.
#
#   perl examples/io-async-loop-ev.pl [URI]        (default: test:///default)

use strict;
use warnings;

use IO::Async::Loop::EV;
use Sys::Virt;
use Sys::Virt::Event::EV;

Sys::Virt::Event::EV->register;             # before opening connections
my $loop = IO::Async::Loop::EV->new;

my $conn = Sys::Virt->new(uri => shift // 'test:///default');
my $dom = $conn->get_domain_by_name('test');
my @steps = (sub { $dom->destroy }, sub { $dom->create },
             sub { $dom->suspend }, sub { $dom->resume });

$conn->domain_event_register_any(undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE,
    sub {
        my ($conn, $dom, $event, $detail) = @_;
        printf "%s: lifecycle event %d, detail %d\n", $dom->get_name, $event, $detail;
        my $next = shift @steps;
        $loop->later($next ? sub { $next->() } : sub { $loop->stop });
    });

$loop->watch_time(after => 5, code => sub { die "no event within 5 seconds\n" });
(shift @steps)->();
$loop->run;

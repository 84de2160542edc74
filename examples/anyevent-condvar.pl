#!/usr/bin/perl
# The same through AnyEvent: on its EV backend, Sys::Virt::Event::AnyEvent
# registers the native loop by itself, and a condition variable's recv
# runs it.
#
#   perl examples/anyevent-condvar.pl [URI]        (default: test:///default)

use strict;
use warnings;

use AnyEvent;
use Sys::Virt;
use Sys::Virt::Event::AnyEvent;

my $loop = Sys::Virt::Event::AnyEvent->register;   # before opening connections
print "loop: ", ref $loop, " on ", AnyEvent::detect(), "\n";

my $conn = Sys::Virt->new(uri => shift // 'test:///default');
my $dom = $conn->get_domain_by_name('test');
my @steps = (sub { $dom->destroy }, sub { $dom->create },
             sub { $dom->suspend }, sub { $dom->resume });
my $done = AnyEvent->condvar;

$conn->domain_event_register_any(undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE,
    sub {
        my ($conn, $dom, $event, $detail) = @_;
        printf "%s: lifecycle event %d, detail %d\n", $dom->get_name, $event, $detail;
        my $next = shift @steps;
        AnyEvent::postpone { $next ? $next->() : $done->send };
    });

my $timeout = AnyEvent->timer(after => 5, cb => sub { $done->croak("no event within 5 seconds\n") });
(shift @steps)->();
$done->recv;

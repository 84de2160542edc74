#!/usr/bin/perl
# The same in a Mojolicious program: with EV installed, Mojo::IOLoop runs
# on Mojo::Reactor::EV, that is on EV's default loop, where the native
# loop's watchers live.
#
#   perl examples/mojo-reactor-ev.pl [URI]        (default: test:///default)

use strict;
use warnings;

BEGIN { $ENV{MOJO_REACTOR} ||= 'Mojo::Reactor::EV' }
use Mojo::IOLoop;
use Sys::Virt;
use Sys::Virt::Event::EV;

Sys::Virt::Event::EV->register;             # before opening connections
die "Mojo::IOLoop runs on ", ref Mojo::IOLoop->singleton->reactor, ", not EV\n"
    unless Mojo::IOLoop->singleton->reactor->isa('Mojo::Reactor::EV');

my $conn = Sys::Virt->new(uri => shift // 'test:///default');
my $dom = $conn->get_domain_by_name('test');
my @steps = (sub { $dom->destroy }, sub { $dom->create },
             sub { $dom->suspend }, sub { $dom->resume });

$conn->domain_event_register_any(undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE,
    sub {
        my ($conn, $dom, $event, $detail) = @_;
        printf "%s: lifecycle event %d, detail %d\n", $dom->get_name, $event, $detail;
        my $next = shift @steps;
        Mojo::IOLoop->next_tick($next ? sub { $next->() } : sub { Mojo::IOLoop->stop });
    });

Mojo::IOLoop->timer(5 => sub { die "no event within 5 seconds\n" });
(shift @steps)->();
Mojo::IOLoop->start;

#!/usr/bin/perl
# What Sys::Virt::Event::Monitor costs per event, against a plain Sys::Virt
# callback measured in the same run: domain lifecycle events of
# test:///default on libvirt's default loop.  Each round drives a burst of
# actions (suspend and resume alternating, one event each), then runs the
# loop until every event is delivered; the delivery phase is timed.  Each
# measurement runs in a child process of its own (libvirt takes one loop
# per process), the modes alternate, and the medians are compared.
# Prints figures and ratios; it passes or fails nothing.
#
#   perl -Mblib bench/monitor.pl [--rounds N] [--burst B]

use 5.018;
use strict;
use warnings;

use Getopt::Long ();
use Time::HiRes ();

my %opt = (rounds => 9, burst => 20000);
Getopt::Long::GetOptions(\%opt, 'rounds=i', 'burst=i', 'child=s')
    && $opt{rounds} > 0 && $opt{burst} > 1
    or die "usage: $0 [--rounds N] [--burst B]\n";

# How the events are received:
#   raw       one Sys::Virt callback (domain_event_register_any)
#   monitor   one monitor subscription to lifecycle: a record per event
#   all       the monitor subscribed to every event type (32 registrations
#             on the test driver), the events still lifecycle ones
#   fanout-8  eight subscriptions to lifecycle: one record, eight calls
my @MODES = qw(raw monitor all fanout-8);

if ($opt{child}) {
    child($opt{child});
    exit 0;
}

print "domain lifecycle events on test:///default, default loop, ",
      "bursts of $opt{burst}, $opt{rounds} rounds, one child process each, ",
      "modes alternating\n";
print "perl $^V, Sys::Virt ", sys_virt_version(), "\n";

# $us{$mode} = [microseconds of delivery per event, one per round]
my (%us, %cpu);
for my $round (1 .. $opt{rounds}) {
    my @order = $round % 2 ? @MODES : reverse @MODES;
    for my $mode (@order) {
        my ($wall, $cpu) = measure($mode);
        push @{$us{$mode}}, $wall;
        push @{$cpu{$mode}}, $cpu;
    }
}

printf "%-10s %14s %14s %12s %12s\n", 'mode', 'wall us/event', 'CPU us/event',
       'wall / raw', 'CPU / raw';
for my $mode (@MODES) {
    my @wall = map { $us{$mode}[$_] / $us{raw}[$_] } 0 .. $opt{rounds} - 1;
    my @cpu = map { $cpu{$mode}[$_] / (($cpu{raw}[$_] + 0) || 1e-9) } 0 .. $opt{rounds} - 1;
    printf "%-10s %14.2f %14.2f %12.3f %12.3f\n", $mode, median($us{$mode}),
           median($cpu{$mode}), median(\@wall), median(\@cpu);
}
print "(medians; a ratio is the median of each round's ratio to raw.  The delivery\n",
      " phase only: the actions cost the same in every mode)\n";

sub measure {
    my ($mode) = @_;
    my @cmd = ($^X, (map { "-I$_" } grep { !ref } @INC), $0,
               '--burst', $opt{burst}, '--child', $mode);
    open my $out, '-|', @cmd or die "cannot run $0: $!\n";
    my $line = <$out> // '';
    close $out;
    my ($wall, $cpu) = $line =~ /\A([0-9.]+) ([0-9.]+)\n\z/
        or die "$mode: the child answered '$line'\n";
    return ($wall, $cpu);
}

sub child {
    my ($mode) = @_;
    require Sys::Virt;
    require Sys::Virt::Event;
    Sys::Virt::Event::register_default();
    # run_default returns after each dispatch; a timer bounds it too
    my $tick = Sys::Virt::Event::add_timeout(100, sub { });
    my $seen = 0;
    my ($conn, $monitor);
    if ($mode eq 'raw') {
        $conn = Sys::Virt->new(uri => 'test:///default');
        $conn->domain_event_register_any(undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE(),
                                         sub { $seen++; 0 });
    } else {
        require Sys::Virt::Event::Monitor;
        $monitor = Sys::Virt::Event::Monitor->new(uri => 'test:///default',
                                                  on_error => sub { });
        my $count = sub { $seen++ if $_[0]{event} eq 'lifecycle' };
        if ($mode eq 'all') {
            $monitor->subscribe('all', $count);
        } else {
            my $n = $mode eq 'fanout-8' ? 8 : 1;
            $monitor->subscribe('lifecycle', $n == 1 ? $count : sub { $seen++ if $_[0] }) for 1 .. $n;
        }
        $monitor->start;
        $conn = $monitor->connection;
    }
    my $per_event = $mode eq 'fanout-8' ? 8 : 1;
    my $dom = $conn->get_domain_by_name('test');
    # a first burst warms up both sides
    my ($wall, $cpu);
    for my $pass (1 .. 2) {
        $seen = 0;
        for my $i (1 .. $opt{burst}) {
            $i % 2 ? $dom->suspend : $dom->resume;
        }
        my ($t0, $c0) = (Time::HiRes::time(), cpu());
        my $deadline = $t0 + 60;
        Sys::Virt::Event::run_default()
            while $seen < $opt{burst} * $per_event && Time::HiRes::time() < $deadline;
        die "$mode: $seen of ", $opt{burst} * $per_event, " deliveries\n"
            if $seen < $opt{burst} * $per_event;
        ($wall, $cpu) = ((Time::HiRes::time() - $t0) * 1e6 / $opt{burst},
                         (cpu() - $c0) * 1e6 / $opt{burst});
    }
    $monitor->stop if $monitor;
    Sys::Virt::Event::remove_timeout($tick);
    printf "%.4f %.4f\n", $wall, $cpu;
    return;
}

sub cpu { my @t = times; return $t[0] + $t[1] }

sub median {
    my @v = sort { $a <=> $b } @{$_[0]};
    return @v % 2 ? $v[$#v / 2] : ($v[@v / 2 - 1] + $v[@v / 2]) / 2;
}

sub sys_virt_version {
    return eval { require Sys::Virt; $Sys::Virt::VERSION } // 'not installed';
}

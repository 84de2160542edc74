#!/usr/bin/perl
# Domain lifecycle event delivery rate on test:///default: the AnyEvent
# loop (Sys::Virt::Event::AnyEvent on EV) against libvirt's own default
# loop, measured in the same run.  libvirt takes one event loop per
# process, so each measurement runs in a child process of its own; the two
# loops alternate, and the medians are compared.  Prints figures and
# ratios; it passes or fails nothing.
#
#   perl -Mblib bench/lifecycle.pl [--rounds N] [--seconds S] [--burst B]

use 5.018;
use strict;
use warnings;

use Getopt::Long ();
use Time::HiRes ();

my %opt = (rounds => 5, seconds => 2, burst => 1000);
Getopt::Long::GetOptions(\%opt, 'rounds=i', 'seconds=f', 'burst=i', 'child=s')
    && $opt{rounds} > 0 && $opt{seconds} > 0 && $opt{burst} > 1
    or die "usage: $0 [--rounds N] [--seconds S] [--burst B]\n";

if ($opt{child}) {
    child(split /,/, $opt{child});
    exit 0;
}

# How events are driven, each on the test driver's domain 'test', with
# suspend and resume alternating (one event each):
#   chain   each delivered event's callback does the next action, so every
#           event is one trip through the loop: the loop's cost per event
#   burst   --burst actions, then the loop runs until all are delivered
#           (libvirt hands a whole queue over in one timer dispatch)
#   actions the actions alone, no event registered: the ceiling libvirt
#           and Sys::Virt set, whatever the loop
my @MODES = qw(chain burst);
my @LOOPS = qw(default anyevent);

my $anyevent_missing = anyevent_missing();
print "domain lifecycle events on test:///default, ",
      "$opt{rounds} rounds of $opt{seconds} s per loop and mode, ",
      "one child process each, loops alternating\n";
print "perl $^V, ", join(', ', versions()), "\n";
if ($anyevent_missing) {
    print "anyevent: not measured: $anyevent_missing\n";
    @LOOPS = ('default');
}

# $rates{$mode}{$loop}{wall or cpu} = [events per second, one per round]
my %rates;
for my $round (1 .. $opt{rounds}) {
    # alternate which loop goes first, so that drift hits both alike
    my @order = $round % 2 ? @LOOPS : reverse @LOOPS;
    for my $mode (@MODES) {
        for my $loop (@order) {
            my ($wall, $cpu) = measure($loop, $mode);
            push @{$rates{$mode}{$loop}{wall}}, $wall;
            push @{$rates{$mode}{$loop}{cpu}}, $cpu;
        }
    }
    my ($wall, $cpu) = measure('default', 'actions');
    push @{$rates{actions}{default}{wall}}, $wall;
    push @{$rates{actions}{default}{cpu}}, $cpu;
}

print "\nevents per second: median over the rounds of events / elapsed time,\n",
      "and of events / CPU time of the child (steadier on a busy machine)\n\n";
printf "%-8s %-9s %10s %10s   %s\n", qw(mode loop wall cpu), 'wall, each round';
for my $mode (@MODES, 'actions') {
    for my $loop (@LOOPS) {
        my $r = $rates{$mode}{$loop} or next;
        printf "%-8s %-9s %10.0f %10.0f   %s\n", $mode, $loop,
            median(@{$r->{wall}}), median(@{$r->{cpu}}),
            join(' ', map { sprintf '%.0f', $_ } @{$r->{wall}});
    }
}
if (!$anyevent_missing) {
    print "\nratio anyevent/default (of the medians)\n";
    for my $mode (@MODES) {
        my ($ae, $def) = @{$rates{$mode}}{qw(anyevent default)};
        printf "  %-6s wall %.3f   cpu %.3f\n", $mode,
            median(@{$ae->{wall}}) / median(@{$def->{wall}}),
            median(@{$ae->{cpu}}) / median(@{$def->{cpu}});
    }
}
printf "\nactions alone: %.0f suspend or resume calls per second, no event\n"
     . "registered: the ceiling libvirt and Sys::Virt set for any loop\n",
    median(@{$rates{actions}{default}{wall}});

sub median {
    my @v = sort { $a <=> $b } @_;
    return @v % 2 ? $v[$#v / 2] : ($v[@v / 2 - 1] + $v[@v / 2]) / 2;
}

sub versions {
    my @v;
    for my $module (qw(Sys::Virt AnyEvent EV)) {
        local $@;
        (my $file = "$module.pm") =~ s{::}{/}g;
        push @v, eval { require $file; "$module " . $module->VERSION }
            // "$module missing";
    }
    return @v;
}

sub anyevent_missing {
    local $@;
    return if eval {
        require EV;
        require AnyEvent;
        require Sys::Virt::Event::AnyEvent;
        1;
    };
    my ($what) = $@ =~ /\ACan't locate (\S+)/;
    return $what ? "$what is not installed" : "it does not load: $@";
}

# Run one child; return its events per second of elapsed time and of
# CPU time.
sub measure {
    my ($loop, $mode) = @_;
    my @cmd = ($^X, (map { "-I$_" } grep { !ref } @INC), $0,
               '--seconds', $opt{seconds}, '--burst', $opt{burst},
               '--child', "$loop,$mode");
    open my $child, '-|', @cmd or die "cannot run a child: $!\n";
    my $report = do { local $/; <$child> };
    close $child;
    my ($events, $wall, $cpu) =
        ($report // '') =~ /^events (\d+) wall (\S+) cpu (\S+)$/m
        or die "$loop $mode: the child failed (status $?): ", $report // '', "\n";
    return ($events / $wall, $events / $cpu);
}

# ---- in the child ------------------------------------------------------------

sub child {
    my ($loop, $mode) = @_;

    # a lost event must not hang the benchmark
    alarm(int($opt{seconds} * 4) + 30);

    require Sys::Virt;
    require Sys::Virt::Event;

    my ($wake, $run);
    if ($loop eq 'anyevent') {
        require EV;
        require AnyEvent;
        require Sys::Virt::Event::AnyEvent;
        AnyEvent::detect() eq 'AnyEvent::Impl::EV'
            or die "AnyEvent does not use EV but ", AnyEvent::detect(), "\n";
        Sys::Virt::Event::AnyEvent->register;
        my $cv;
        $wake = sub { $cv->send };
        $run = sub {
            my ($done) = @_;
            until ($done->()) {
                $cv = AnyEvent->condvar;
                $cv->recv;
            }
        };
    } else {
        Sys::Virt::Event::register_default();
        $wake = sub { };
        $run = sub {
            my ($done) = @_;
            Sys::Virt::Event::run_default() until $done->();
        };
    }

    my $conn = Sys::Virt->new(uri => 'test:///default');
    my $dom = $conn->get_domain_by_name('test');
    my $paused = 0;
    my $act = sub {
        $paused ? $dom->resume : $dom->suspend;
        $paused = !$paused;
    };

    my ($t0, $c0);
    my $start = sub {
        ($t0, $c0) = (Time::HiRes::time(), cpu_time());
    };
    my $report = sub {
        my ($n) = @_;
        printf "events %d wall %.6f cpu %.6f\n", $n,
            Time::HiRes::time() - $t0, cpu_time() - $c0;
    };

    if ($mode eq 'actions') {
        my $n = 0;
        $start->();
        $act->(), $n++ while Time::HiRes::time() - $t0 < $opt{seconds};
        $report->($n);
        return;
    }

    my ($delivered, $target, $end, $chain) = (0, 0, 0, 0);
    my $id = $conn->domain_event_register_any(undef,
        Sys::Virt::Domain::EVENT_ID_LIFECYCLE(), sub {
            $delivered++;
            if ($chain) {
                if (Time::HiRes::time() < $end) {
                    $act->();
                } else {
                    $chain = 0;
                    $wake->();
                }
            } elsif ($delivered >= $target) {
                $wake->();
            }
            return 0;
        });

    my $do_chain = sub {
        my ($seconds) = @_;
        ($chain, $end) = (1, Time::HiRes::time() + $seconds);
        $act->();
        # every action's event has arrived once the chain stops
        $run->(sub { !$chain });
    };
    my $do_burst = sub {
        $target = $delivered + $opt{burst};
        $act->() for 1 .. $opt{burst};
        $run->(sub { $delivered >= $target });
    };

    # warm up: caches, the loop's first allocations
    $do_chain->(0.1);
    $do_burst->();

    my $before = $delivered;
    $start->();
    if ($mode eq 'chain') {
        $do_chain->($opt{seconds});
    } else {
        $do_burst->() while Time::HiRes::time() - $t0 < $opt{seconds};
    }
    $report->($delivered - $before);

    $conn->domain_event_deregister_any($id);
    return;
}

# CPU time of this process, all its threads.
sub cpu_time {
    return Time::HiRes::clock_gettime(Time::HiRes::CLOCK_PROCESS_CPUTIME_ID());
}

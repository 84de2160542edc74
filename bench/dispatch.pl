#!/usr/bin/perl
# bench/dispatch.pl: what one dispatch, one add+remove and the memory of a
# long-running loop cost through Sys::Virt::Event, beside the cost of the
# cheapest calls Perl can make.  Not a test: it prints figures and never
# judges them.  See bench/README.md.
#
#   perl -Mblib bench/dispatch.pl     # this build
#   perl bench/dispatch.pl            # the installed Sys::Virt::Event
#   perl bench/dispatch.pl --quick    # a few seconds, rougher figures

use strict;
use warnings;

use Digest::MD5 ();
use File::Basename ();
use File::Spec ();
use Getopt::Long ();
use POSIX ();
use Time::HiRes qw(clock_gettime CLOCK_PROCESS_CPUTIME_ID);

BEGIN {
    # The system's Sys::Virt::Event::register needs Sys::Virt's XSUBs;
    # this distribution's module does without, but accepts it loaded first.
    # Both load before the rest of this file is compiled: a call compiled
    # earlier would stay bound to Sys::Virt's own Sys::Virt::Event subs.
    eval { require Sys::Virt; 1 };
    if (!eval { require Sys::Virt::Event; 1 }) {
        die "dispatch.pl: cannot load Sys::Virt::Event (run it as "
            . "'perl -Mblib bench/dispatch.pl' for this build, or install "
            . "libsys-virt-perl for the system's): $@";
    }
}

# Bench::Loop, the minimal loop whose helpers are measured
use lib File::Spec->catdir(File::Basename::dirname(File::Spec->rel2abs(__FILE__)), 'lib');
use Bench::Loop ();

# The shared object that was loaded, with its digest and time of build: a
# tree that is rebuilt while benchmarks run must not pass for one build.
my $XS_OBJECT = do {
    my @so = @DynaLoader::dl_shared_objects;
    my ($so) = (grep({ m{/auto/Sys/Virt/Event/Event\.so\z} } @so),
                grep({ m{/auto/Sys/Virt/Virt\.so\z} } @so));
    my ($md5, @st) = ('unknown');
    if ($so && open my $fh, '<:raw', $so) {
        $md5 = substr(Digest::MD5->new->addfile($fh)->hexdigest, 0, 12);
        @st = stat $fh;
    }
    $so ? sprintf('%s (md5 %s, %d bytes, modified %s)', $so, $md5, $st[7] // 0,
                  POSIX::strftime('%Y-%m-%d %H:%M:%S', localtime($st[9] // 0)))
        : 'unknown';
};

# The call floors (bench/callfloor), when they have been built: the
# cheapest XSUBs that call a coderef, with and without the protection a
# dispatch needs.  The same object serves this build's runs and the
# system's.
my $FLOOR = do {
    my $dir = File::Spec->catdir(File::Basename::dirname(File::Spec->rel2abs(__FILE__)),
                                 'callfloor', 'blib');
    local @INC = (File::Spec->catdir($dir, 'arch'), File::Spec->catdir($dir, 'lib'), @INC);
    eval { require Bench::CallFloor; Bench::CallFloor->new };
};

# The same loop with the helper replaced by an empty method: calling its
# methods directly measures the implementation's own Perl work.
package Bench::Loop::Bare;

our @ISA = ('Bench::Loop');

sub _free_callback_opaque { return }

package main;

my %opt = (reps => 7, time => 0.25, churn => 1_000_000, watches => 10_000,
           timeout => 180);
Getopt::Long::GetOptions(
    'quick'     => sub { @opt{qw(reps time churn)} = (3, 0.05, 100_000) },
    'reps=i'    => \$opt{reps},
    'time=f'    => \$opt{time},
    'churn=i'   => \$opt{churn},
    'watches=i' => \$opt{watches},
    'timeout=i' => \$opt{timeout},
    'help'      => sub { print usage(); exit 0 },
) or die usage();
die usage() if @ARGV || $opt{reps} < 1 || $opt{time} <= 0
    || $opt{churn} < 0 || $opt{watches} < 2;

sub usage {
    return <<'END';
usage: perl [-Mblib] bench/dispatch.pl [options]
  --quick        3 repetitions of 0.05 s, 100000 churn cycles for RSS
  --reps N       repetitions of each measurement (default 7)
  --time S       CPU seconds per repetition (default 0.25)
  --churn N      add+remove cycles for the RSS figure (default 1000000)
  --watches N    watches registered for the scaling figure (default 10000)
  --timeout S    give up after S seconds (default 180)
END
}

$| = 1;
# A die here could land in a callback that the glue runs under G_EVAL and
# only be reported; leave for certain.
$SIG{ALRM} = sub {
    print STDERR "dispatch.pl: gave up after $opt{timeout} s (--timeout)\n";
    POSIX::_exit(124);
};
alarm $opt{timeout};

my $READABLE = Sys::Virt::Event::HANDLE_READABLE();

print "# Sys::Virt::Event dispatch benchmark (process CPU time; medians of "
    . "$opt{reps} repetitions)\n";
printf "implementation: %s (Sys::Virt::Event %s)\n", $INC{'Sys/Virt/Event.pm'},
    $Sys::Virt::Event::VERSION // 'without a version';
print "xs_object: $XS_OBJECT\n";
printf "sys_virt: %s\n", $INC{'Sys/Virt.pm'}
    ? "$Sys::Virt::VERSION $INC{'Sys/Virt.pm'}" : 'not loaded';
printf "perl: %vd %s\n", $^V, $^X;
print "empty_xsub_is: utf8::is_utf8(\$string)\n";
print $FLOOR ? "call_floors: $INC{'Bench/CallFloor.pm'}\n"
    : "# call floors: not built (cd bench/callfloor && perl Makefile.PL && make)\n";

my $loop = Bench::Loop->new;
$loop->register;
pipe(my $rd, my $wr) or die "dispatch.pl: pipe: $!";
my $fd = fileno $rd;

check_round_trip();

# The watch and timer whose dispatch is measured, with the cb/opaque
# values libvirt gave the loop for them.
my $empty = sub { };
my $watch = Sys::Virt::Event::add_handle($fd, $READABLE, $empty);
my $handle = [$watch, $fd, $READABLE, @{$loop->{handles}{$watch}}[2, 3]];
my $timer = Sys::Virt::Event::add_timeout(1000, $empty);
my ($tcb, $topaque) = @{$loop->{timeouts}{$timer}}[1, 2];

# The implementation's own work, on another object: nothing registered.
my $bare = bless { handles => {}, timeouts => {}, next => 0 }, 'Bench::Loop::Bare';
my ($dummy_cb, $dummy_opaque, $dummy_ff) = (\my $c, \my $o, \my $f);

my $string = 'x';
my $nwatches = $opt{watches};
my $nsample = 16;
my @same = ($handle) x $nsample;
my (@extra, @all, @sample);

# Each case runs its body $n times ($n a multiple of the case's unit);
# every body sits in the same kind of loop so that the loop's own cost is
# common to all figures.
my @one = (
    [empty_perl_sub => sub {
        my ($n) = @_;
        for (1 .. $n) { $empty->() }
    }],
    [empty_xsub => sub {
        my ($n) = @_;
        for (1 .. $n) { utf8::is_utf8($string) }
    }],
    [handle_dispatch => sub {
        my ($n) = @_;
        my ($w, $d, $ev, $cb, $op) = @$handle;
        for (1 .. $n) { $loop->_run_handle_callback($w, $d, $ev, $cb, $op) }
    }],
    [timer_dispatch => sub {
        my ($n) = @_;
        for (1 .. $n) { $loop->_run_timeout_callback($timer, $tcb, $topaque) }
    }],
    [churn => sub {
        my ($n) = @_;
        for (1 .. $n) {
            Sys::Virt::Event::remove_handle(
                Sys::Virt::Event::add_handle($fd, $READABLE, $empty));
        }
    }],
    [churn_impl => sub {
        my ($n) = @_;
        for (1 .. $n) {
            $bare->remove_handle($bare->add_handle($fd, $READABLE, $dummy_cb,
                                                   $dummy_opaque, $dummy_ff));
        }
    }],
    ($FLOOR ? (
        [floor_handle_call => sub {
            my ($n) = @_;
            my ($w, $d, $ev, undef, $op) = @$handle;
            for (1 .. $n) { $FLOOR->handle_unprotected($w, $d, $ev, $empty, $op) }
        }],
        [floor_handle_protected => sub {
            my ($n) = @_;
            my ($w, $d, $ev, undef, $op) = @$handle;
            for (1 .. $n) { $FLOOR->handle_protected($w, $d, $ev, $empty, $op) }
        }],
        [floor_timer_call => sub {
            my ($n) = @_;
            for (1 .. $n) { $FLOOR->timer_unprotected($timer, $empty, $topaque) }
        }],
        [floor_timer_protected => sub {
            my ($n) = @_;
            for (1 .. $n) { $FLOOR->timer_protected($timer, $empty, $topaque) }
        }],
        # churn_impl's work, its two methods called from XSUBs as the
        # trampolines must: protected, in scalar context
        [floor_churn => sub {
            my ($n) = @_;
            my ($add, $remove) = map { Bench::Loop::Bare->can($_) } qw(add_handle remove_handle);
            for (1 .. $n) {
                Bench::CallFloor::scalar_protected($remove, $bare,
                    Bench::CallFloor::scalar_protected($add, $bare, $fd, $READABLE, $dummy_cb,
                                                       $dummy_opaque, $dummy_ff));
            }
        }],
    ) : ()),
    # the loop of the scaling figures below, on the only watch
    [dispatch_1_watch => sub {
        my ($n) = @_;
        for (1 .. $n / $nsample) {
            for my $e (@same) { $loop->_run_handle_callback(@$e) }
        }
    }, $nsample],
);

my @many = (
    # the same loop, on watches spread over all those registered
    ["dispatch_${nwatches}_watches" => sub {
        my ($n) = @_;
        for (1 .. $n / $nsample) {
            for my $e (@sample) { $loop->_run_handle_callback(@$e) }
        }
    }, $nsample],
    # each of them in turn: mostly a measure of memory traffic
    ["dispatch_${nwatches}_watches_all" => sub {
        my ($n) = @_;
        for (1 .. $n / $nwatches) {
            for my $e (@all) { $loop->_run_handle_callback(@$e) }
        }
    }, $nwatches],
);

my %median;
measure(@one);
printf "churn_glue: %.1f ns/op\n", $median{churn} - $median{churn_impl};
$median{churn_glue} = $median{churn} - $median{churn_impl};
for my $name (qw(handle_dispatch timer_dispatch churn churn_impl churn_glue)) {
    for my $floor (qw(empty_perl_sub empty_xsub)) {
        printf "%s/%s: %.2f\n", $name, $floor, $median{$name} / $median{$floor};
    }
}
if ($FLOOR) {
    for my $kind (qw(handle timer)) {
        for my $floor ("floor_${kind}_call", "floor_${kind}_protected") {
            printf "%s_dispatch/%s: %.2f\n", $kind, $floor,
                $median{"${kind}_dispatch"} / $median{$floor};
        }
        printf "%s_dispatch_above_protected_floor: %.1f ns/op\n", $kind,
            $median{"${kind}_dispatch"} - $median{"floor_${kind}_protected"};
    }
    printf "churn/floor_churn: %.2f\n", $median{churn} / $median{floor_churn};
    printf "churn_above_floor: %.1f ns/op\n", $median{churn} - $median{floor_churn};
}

# Memory: a long-running program adds and removes watches all day.  Done
# before the scaling figures, whose memory, freed, would hide a leak.
my $rss0 = rss_kb();
for (1 .. $opt{churn}) {
    Sys::Virt::Event::remove_handle(Sys::Virt::Event::add_handle($fd, $READABLE, $empty));
}
my $rss1 = rss_kb();
print "churn_cycles: $opt{churn} cycles\n";
print "rss_before_churn: $rss0 kB\n";
printf "rss_growth: %d kB\n", $rss1 - $rss0;
printf "rss_growth_per_cycle: %.2f bytes\n",
    $opt{churn} ? ($rss1 - $rss0) * 1024 / $opt{churn} : 0;

# Scaling: the same dispatches with $nwatches watches registered (all on
# the one pipe).  What they take in memory comes with the loop's own
# hash entries, as in a real program.
my $rss2 = rss_kb();
@extra = map { Sys::Virt::Event::add_handle($fd, $READABLE, $empty) } 2 .. $nwatches;
printf "memory_per_watch: %.0f bytes\n", (rss_kb() - $rss2) * 1024 / @extra;
@all = ($handle, map {
    my $h = $loop->{handles}{$_};
    [$_, $fd, $READABLE, $h->[2], $h->[3]];
} @extra);
@sample = @all[map { int($_ * ($nwatches - 1) / ($nsample - 1)) } 0 .. $nsample - 1];
measure(@many);
for my $name ("dispatch_${nwatches}_watches", "dispatch_${nwatches}_watches_all") {
    printf "%s/dispatch_1_watch: %.3f\n", $name, $median{$name} / $median{dispatch_1_watch};
}
@all = @sample = ();
Sys::Virt::Event::remove_handle($_) for splice @extra;

Sys::Virt::Event::remove_handle($watch);
Sys::Virt::Event::remove_timeout($timer);
my $left = keys(%{$loop->{handles}}) + keys(%{$loop->{timeouts}});
print "# warning: $left watches/timers still registered at the end\n" if $left;
printf "cpu_seconds: %.1f s\n", clock_gettime(CLOCK_PROCESS_CPUTIME_ID);
alarm 0;
exit 0;

# Calibrates the cases, runs them in turn --reps times, prints the medians.
sub measure {
    my @cases = @_;
    my %runs;
    my @n = map { calibrate($_) } @cases;
    for my $rep (1 .. $opt{reps}) {
        for my $i (0 .. $#cases) {
            push @{$runs{$cases[$i][0]}}, run_case($cases[$i], $n[$i]);
        }
    }
    for my $i (0 .. $#cases) {
        my $name = $cases[$i][0];
        my @r = sort { $a <=> $b } @{$runs{$name}};
        $median{$name} = median(@r);
        printf "%s: %.1f ns/op\n", $name, $median{$name};
        printf "# %s: %d ops a repetition, in turn: %s (spread %.1f%%)\n",
            $name, $n[$i], join(' ', map { sprintf '%.1f', $_ } @{$runs{$name}}),
            100 * ($r[-1] - $r[0]) / $median{$name};
    }
    return;
}

# A dispatch reaches the coderef, and remove releases it: otherwise the
# figures would measure something else.
sub check_round_trip {
    my ($calls, $released) = (0, 0);
    my $id = do {
        my $guard = bless sub { $released++ }, 'Bench::Guard';
        Sys::Virt::Event::add_handle($fd, $READABLE, sub { $calls++; $guard });
    };
    my $h = $loop->{handles}{$id};
    $loop->_run_handle_callback($id, $fd, $READABLE, $h->[2], $h->[3]);
    Sys::Virt::Event::remove_handle($id);
    die "dispatch.pl: a dispatch did not reach the coderef\n" unless $calls == 1;
    print "# warning: remove_handle did not release the coderef\n" unless $released;
    return;
}

sub Bench::Guard::DESTROY { $_[0]->() }

# CPU nanoseconds per op for $n ops.
sub run_case {
    my ($case, $n) = @_;
    my $t0 = clock_gettime(CLOCK_PROCESS_CPUTIME_ID);
    $case->[1]->($n);
    return (clock_gettime(CLOCK_PROCESS_CPUTIME_ID) - $t0) * 1e9 / $n;
}

# The number of ops (a multiple of the case's unit) that takes about
# --time seconds; the runs on the way warm everything up.
sub calibrate {
    my ($case) = @_;
    my $unit = $case->[2] || 1;
    my $n = $unit;
    while (1) {
        my $ns = run_case($case, $n);
        if ($ns * $n >= 0.02e9 || $n >= 1e9) {
            my $want = $opt{time} * 1e9 / $ns;
            return $unit * (int($want / $unit) || 1);
        }
        $n *= 10;
    }
}

sub median {
    my @v = sort { $a <=> $b } @_;
    return @v % 2 ? $v[$#v / 2] : ($v[@v / 2 - 1] + $v[@v / 2]) / 2;
}

sub rss_kb {
    open my $fh, '<', '/proc/self/status' or return 0;
    while (<$fh>) {
        return $1 if /^VmRSS:\s+(\d+)\s+kB/;
    }
    return 0;
}

#!/usr/bin/perl
# bench/loops.pl: libvirt's default loop, the native libev loop
# (Sys::Virt::Event::EV) and the AnyEvent loop (native on EV, and its Perl
# path) side by side, in one run: domain lifecycle events (burst, chain,
# await) on test:///default and through a private libvirtd, remote RPC
# calls per second, and a public watch's dispatch against the system's
# Sys::Virt 9.0.0; optionally instructions per event under callgrind.
# libvirt takes one event loop per process, so every measurement slice
# is a fresh perl process; the loops take turns, and each ratio is the
# median of the ratios of paired slices.  Not a test: it prints figures,
# passes or fails nothing, and exits 0.  See bench/README.md.
#
#   perl -Mblib bench/loops.pl               # about 3 minutes
#   perl -Mblib bench/loops.pl --quick       # rough figures, about 30 s
#   perl -Mblib bench/loops.pl --callgrind   # and Ir per event (slow)

use 5.018;
use strict;
use warnings;

use Cwd ();
use File::Basename ();
use Getopt::Long ();
use POSIX ();
use Time::HiRes ();

# Bench::Loop, bench/dispatch.pl's minimal loop (the upstream figures)
use lib File::Basename::dirname(Cwd::abs_path(__FILE__)) . '/lib';
use Bench::Loop ();

my $ROOT = Cwd::abs_path(File::Basename::dirname(Cwd::abs_path(__FILE__)) . '/..');
my $SCRIPT = Cwd::abs_path(__FILE__);

# The loops, by the names used in figures and in --loops.
my @LOOPS = qw(default ev_native anyevent_ev anyevent_perl);
my %LOOP_DOES = (
    default       => 'Sys::Virt::Event::register_default() + run_default()',
    ev_native     => 'Sys::Virt::Event::EV->register + EV::run(EV::RUN_ONCE)',
    anyevent_ev   => 'Sys::Virt::Event::AnyEvent->register on EV (native) + condvars',
    anyevent_perl => 'Sys::Virt::Event::AnyEvent->register(native => 0) on EV + condvars',
);
my @WORKLOADS = qw(burst chain await);
my @RPC_PATTERNS = qw(registered between inside);
my $PER_ITERATION = 16;     # watches ready at once, in the x16 dispatch figures

my %opt = (
    slices    => 9,         # paired slices of each event figure on test:///default
    remote_slices => 15,    # the same over the daemon, and of each RPC figure
    seconds   => 0.2,       # measured wall seconds in one slice
    burst     => 100,       # operations in one burst (and a round of chain/await)
    batch     => 50,        # RPC calls between two loop iterations
    rounds    => 3,         # dispatch rounds (this build, then the system's)
    reps      => 5,         # repetitions in one dispatch round
    time      => 0.1,       # CPU seconds of one dispatch repetition
    cg_events => '200,600', # events of the two callgrind runs
    cg_top    => 0,         # functions to list per event (callgrind)
    timeout   => 60,        # seconds for one slice (callgrind: 10 x)
);
my %LONG_OPTS = (
    'slices=i' => \$opt{slices}, 'remote-slices=i' => \$opt{remote_slices},
    'seconds=f' => \$opt{seconds},
    'burst=i' => \$opt{burst}, 'batch=i' => \$opt{batch},
    'rounds=i' => \$opt{rounds}, 'reps=i' => \$opt{reps}, 'time=f' => \$opt{time},
    'callgrind' => \$opt{callgrind}, 'cg-events=s' => \$opt{cg_events},
    'cg-top=i' => \$opt{cg_top}, 'cg-keep=s' => \$opt{cg_keep},
    'no-daemon' => \$opt{no_daemon}, 'parts=s' => \$opt{parts},
    'loops=s' => \$opt{loops}, 'timeout=i' => \$opt{timeout},
    'child=s' => \$opt{child},
    'quick' => sub {
        @opt{qw(slices remote_slices seconds rounds reps time cg_events)}
            = (3, 5, 0.1, 1, 3, 0.05, '100,300');
    },
    'help' => sub { print usage(); exit 0 },
);
Getopt::Long::GetOptions(%LONG_OPTS) or do { print STDERR usage(); exit 0 };

sub usage {
    return <<'END';
usage: perl -Mblib bench/loops.pl [options]
  --quick         3 and 5 slices of 0.1 s, 1 dispatch round, callgrind with 100/300 events
  --slices N      paired slices of each event figure on test:///default (default 9)
  --remote-slices N  the same over the daemon, and of each RPC figure (15)
  --seconds S     measured wall seconds in one slice (default 0.2)
  --burst N       operations in one burst, and in one round of chain and await (100)
  --batch N       RPC calls between two loop iterations (50)
  --rounds N      dispatch rounds, this build's and the system's in turn (3)
  --reps N        repetitions in one dispatch round (5)
  --time S        CPU seconds of one dispatch repetition (0.1)
  --callgrind     also instructions per event under callgrind (several minutes)
  --cg-events A,B the events of the two callgrind runs (200,600)
  --cg-top K      with --callgrind: per workload, the K functions whose self Ir per
                  event differ most between ev_native and default (and anyevent_ev
                  and ev_native), and per dispatch between native, EV's floor and
                  the system module's helper
  --cg-keep DIR   keep callgrind's output files in DIR
  --no-daemon     leave out everything that needs the private libvirtd
  --parts LIST    of events,rpc,dispatch,callgrind (default: the first three, and
                  callgrind with --callgrind)
  --loops LIST    default,ev_native,anyevent_ev,anyevent_perl (default: all)
  --timeout S     give up on one slice after S seconds (60; callgrind 10 x)
END
}

# The parent's state: the daemon, the URIs measured, the loops left out
# and why, the children's -I options, the system module's run.
my ($DAEMON, %WHERE, %MISSING, @INCS, %SYSTEM, %CHECKED);

if (defined $opt{child}) {
    child($opt{child});
    exit 0;
}
if (!eval { main(); 1 }) {
    print "# loops.pl stopped: $@";
}
exit 0;

# ==========================================================================
# the parent
# ==========================================================================

sub main {
    $| = 1;
    die usage() if @ARGV || $opt{slices} < 1 || $opt{remote_slices} < 1
        || $opt{seconds} <= 0 || $opt{burst} < 1 || $opt{batch} < 1 || $opt{rounds} < 1
        || $opt{reps} < 1 || $opt{time} <= 0;
    # the children see what this process sees (-Mblib included)
    @INCS = map { "-I$_" } grep { !ref } @INC;
    my %parts = map { $_ => 1 } split /,/, ($opt{parts} // 'events,rpc,dispatch');
    $parts{callgrind} = 1 if $opt{callgrind};
    if ($opt{loops}) {
        my %want = map { $_ => 1 } split /,/, $opt{loops};
        @LOOPS = ('default', grep { $want{$_} && $_ ne 'default' } @LOOPS);
    }
    my $t0 = Time::HiRes::time();
    header();
    start_daemon();

    events_part() if $parts{events};
    rpc_part() if $parts{rpc};
    dispatch_part() if $parts{dispatch};
    callgrind_part() if $parts{callgrind};

    printf "wall_seconds: %.0f s\n", Time::HiRes::time() - $t0;
    $DAEMON->stop if $DAEMON;
    return;
}

# The build measured, what it runs with, and which loops can be measured.
sub header {
    require Sys::Virt;
    require Sys::Virt::Event;
    print "# Sys::Virt::Event loops benchmark: default, native (EV) and AnyEvent loops; "
        . "fresh perl per slice, loops alternating\n";
    printf "implementation: %s (Sys::Virt::Event %s)\n", $INC{'Sys/Virt/Event.pm'},
        $Sys::Virt::Event::VERSION // 'without a version';
    print "xs_object: ", xs_object(), "\n";
    printf "sys_virt: %s %s\n", $Sys::Virt::VERSION, $INC{'Sys/Virt.pm'};
    printf "perl: %vd %s\n", $^V, $^X;
    for my $module (qw(EV AnyEvent)) {
        (my $file = "$module.pm") =~ s{::}{/}g;
        my $v = eval { require $file; $module->VERSION };
        printf "%s: %s\n", lc $module, defined $v ? "$v $INC{$file}" : 'not installed';
    }
    my $native = eval { require EV; require Sys::Virt::Event::EV; 1 };
    if ($native) {
        print "native_loop: Sys::Virt::Event::EV $INC{'Sys/Virt/Event/EV.pm'}\n";
    } else {
        (my $why = $@) =~ s/\n.*//s;
        $MISSING{$_} = "Sys::Virt::Event::EV does not load: $why"
            for qw(ev_native anyevent_ev);
        print "native_loop: not available: $why\n";
    }
    if (!eval { require AnyEvent; require Sys::Virt::Event::AnyEvent; 1 }) {
        (my $why = $@) =~ s/\n.*//s;
        $MISSING{$_} //= "AnyEvent does not load: $why" for qw(anyevent_ev anyevent_perl);
    }
    for my $loop (@LOOPS) {
        printf "# loop %s: %s%s\n", $loop, $LOOP_DOES{$loop},
            $MISSING{$loop} ? " -- not measured: $MISSING{$loop}" : '';
    }
    @LOOPS = grep { !$MISSING{$_} } @LOOPS;
    %WHERE = (test => 'test:///default');
    return;
}

# The shared object this process's Sys::Virt::Event XSUBs came from.
sub xs_object {
    my ($so) = grep { m{/auto/Sys/Virt/Event/Event\.so\z} } @DynaLoader::dl_shared_objects;
    ($so) = grep { m{/auto/Sys/Virt/Virt\.so\z} } @DynaLoader::dl_shared_objects
        unless $so;
    return 'unknown' unless $so && open my $fh, '<:raw', $so;
    require Digest::MD5;
    my $md5 = substr(Digest::MD5->new->addfile($fh)->hexdigest, 0, 12);
    my @st = stat $fh;
    return sprintf '%s (md5 %s, %d bytes, modified %s)', $so, $md5, $st[7],
        POSIX::strftime('%Y-%m-%d %H:%M:%S', localtime $st[9]);
}

sub start_daemon {
    if ($opt{no_daemon}) {
        print "daemon: not used (--no-daemon): the remote figures are left out\n";
        return;
    }
    my $why;
    if (!eval { local @INC = ("$ROOT/t/lib", @INC); require PrivateLibvirtd; 1 }) {
        $why = "t/lib/PrivateLibvirtd.pm does not load: $@";
    } else {
        $why = PrivateLibvirtd::unavailable();
    }
    if (!$why) {
        $DAEMON = eval { PrivateLibvirtd->start(ready_timeout => 15) };
        ($why = $@ || '') =~ s/\n.*//s;
    }
    if (!$DAEMON) {
        print "daemon: not available: $why; the remote figures are left out\n";
        return;
    }
    $WHERE{remote} = $DAEMON->uri;
    my $bin = do { no warnings "once"; $PrivateLibvirtd::LIBVIRTD };
    print "daemon: $WHERE{remote} (pid ", $DAEMON->pid, ", $bin)\n";
    return;
}

# --------------------------------------------------------------------------
# domain lifecycle events
# --------------------------------------------------------------------------

sub events_part {
    my @where = grep { $WHERE{$_} } qw(test remote);
    my %slices = (test => $opt{slices}, remote => $opt{remote_slices});
    print "\n# domain lifecycle events: events per second (ev/s) of wall time and of the "
        . "child's CPU time (ev/cpu_s), median of $opt{slices} (test:///default) and "
        . "$opt{remote_slices} (remote) slices of $opt{seconds} s, a slice's rate the median "
        . "of its rounds' (a burst, a chain or $opt{burst} awaits: $opt{burst} events); "
        . "ratios: median of the slices' ratios\n";
    my %r;      # $r{$where}{$wl}{$loop} = [{wall => , cpu => } per slice]
    my $last = (sort { $b <=> $a } map { $slices{$_} } @where)[0] // 0;
    for my $slice (1 .. $last) {
        my @order = $slice % 2 ? @LOOPS : reverse @LOOPS;
        for my $where (grep { $slice <= $slices{$_} } @where) {
            for my $wl (@WORKLOADS) {
                for my $loop (@order) {
                    my $out = run_child("events,loop=$loop,where=$where,workload=$wl,"
                                        . "seconds=$opt{seconds},burst=$opt{burst}",
                                        loop => $loop, uri => $WHERE{$where});
                    push @{$r{$where}{$wl}{$loop}}, rates_of($out);
                }
            }
        }
        print STDERR "loops.pl: events, slice $slice/$last done\n";
    }
    for my $where (@where) {
        for my $wl (@WORKLOADS) {
            print_paired("${wl}_${where}", $r{$where}{$wl}, 'ev/s', 'ev/cpu_s');
        }
    }
    return;
}

# A slice's rates (the median of its intervals'), or undef.
sub rates_of {
    my ($out) = @_;
    return undef unless $out && $out->{wall_rate} && $out->{cpu_rate};
    return { wall => $out->{wall_rate}, cpu => $out->{cpu_rate} };
}

# Figures and paired ratios to the default loop, for one workload:
# $slices->{$loop} = [{wall, cpu} or undef per slice].
sub print_paired {
    my ($prefix, $slices, $unit, $cpu_unit) = @_;
    for my $loop (grep { $slices->{$_} } @LOOPS) {
        my $name = "${prefix}_$loop";
        for my $kind (qw(wall cpu)) {
            my @v = map { $_ ? $_->{$kind} : () } @{$slices->{$loop}};
            if (!@v) {
                print "# $name: no slice succeeded\n";
                last;
            }
            printf "%s%s: %.0f %s\n", $name, $kind eq 'cpu' ? '_cpu' : '', median(@v),
                $kind eq 'cpu' ? $cpu_unit : $unit;
            printf "# %s%s: %d slices: %s (spread %.1f%%)\n", $name,
                $kind eq 'cpu' ? '_cpu' : '', scalar @v,
                join(' ', map { sprintf '%.0f', $_ } @v), spread(@v);
        }
    }
    my $ref = $slices->{default} or return;
    for my $loop (grep { $_ ne 'default' && $slices->{$_} } @LOOPS) {
        for my $kind (qw(wall cpu)) {
            my @ratios;
            for my $i (0 .. $#$ref) {
                my ($a, $b) = ($slices->{$loop}[$i], $ref->[$i]);
                push @ratios, $a->{$kind} / $b->{$kind} if $a && $b && $b->{$kind};
            }
            next unless @ratios;
            my $suffix = $kind eq 'cpu' ? '_cpu' : '';
            printf "%s_%s%s/%s_default%s: %.3f\n", $prefix, $loop, $suffix, $prefix,
                $suffix, median(@ratios);
            printf "# %s_%s%s/%s_default%s: %d paired slices: %s (spread %.1f%%)\n",
                $prefix, $loop, $suffix, $prefix, $suffix, scalar @ratios,
                join(' ', map { sprintf '%.3f', $_ } @ratios), spread(@ratios);
        }
    }
    return;
}

# --------------------------------------------------------------------------
# remote RPC calls
# --------------------------------------------------------------------------

sub rpc_part {
    if (!$WHERE{remote}) {
        print "\n# remote RPC calls: not measured (no daemon)\n";
        return;
    }
    my @loops = grep { $_ eq 'default' || $_ eq 'ev_native' } @LOOPS;
    print "\n# remote RPC calls: \$dom->get_info over the private daemon, calls per second "
        . "(calls/s), median of $opt{remote_slices} slices of $opt{seconds} s, a slice's "
        . "rate the median of its batches'; registered: "
        . "the loop never runs; between: one loop iteration (a public add_timeout(0) due) after each "
        . "$opt{batch} calls; inside: $opt{batch} calls in each call of that timer's callback, "
        . "the loop running\n";
    my %r;
    for my $slice (1 .. $opt{remote_slices}) {
        my @order = $slice % 2 ? @loops : reverse @loops;
        for my $pattern (@RPC_PATTERNS) {
            for my $loop (@order) {
                my $out = run_child("rpc,loop=$loop,pattern=$pattern,seconds=$opt{seconds},"
                                    . "batch=$opt{batch}", loop => $loop, uri => $WHERE{remote});
                push @{$r{$pattern}{$loop}}, rates_of($out);
            }
        }
        print STDERR "loops.pl: rpc, slice $slice/$opt{remote_slices} done\n";
    }
    print_paired("rpc_$_", $r{$_}, 'calls/s', 'calls/cpu_s') for @RPC_PATTERNS;
    return;
}

# --------------------------------------------------------------------------
# a public watch's dispatch, against the system's Sys::Virt 9.0.0
# --------------------------------------------------------------------------

sub dispatch_part {
    print "\n# public handle dispatch: Sys::Virt::Event::add_handle(\$fd, HANDLE_READABLE, "
        . "sub { }) on a pipe kept readable, process CPU ns per dispatch, median of "
        . "$opt{reps} repetitions x $opt{rounds} round(s); run_once: one EV::run(EV::RUN_ONCE) "
        . "(run_default) per dispatch; run: one EV::run, the callback counts down and calls "
        . "EV::break; x$PER_ITERATION: $PER_ITERATION such watches, one EV::run(EV::RUN_ONCE) "
        . "per $PER_ITERATION dispatches; ev_io_*: EV's own EV::io watchers, same pipe, same "
        . "coderef (the floor of a dispatch through EV); upstream_helper: the system module's "
        . "helper called directly by a minimal Perl loop (nothing polled), as bench/dispatch.pl "
        . "does\n";
    printf "# EV's backend: %s\n", eval {
        require EV;
        my %name = (EV::BACKEND_SELECT() => 'select', EV::BACKEND_POLL() => 'poll',
                    EV::BACKEND_EPOLL() => 'epoll');
        $name{EV::backend()} // EV::backend();
    } // 'EV not loaded';
    my $system = system_module();
    my (%mine, @system);
    for my $round (1 .. $opt{rounds}) {
        for my $loop (@LOOPS) {
            next if $loop eq 'anyevent_ev';     # the same C loop as ev_native
            my $out = run_child("dispatch,loop=$loop,reps=$opt{reps},time=$opt{time}",
                                loop => $loop) or next;
            for my $key (grep { /^handle_dispatch_|^ev_io_/ } keys %$out) {
                push @{$mine{$key}}, split / /, $out->{$key};
            }
        }
        if ($system) {
            my $out = run_child("dispatch,loop=upstream,reps=$opt{reps},time=$opt{time}",
                                loop => 'upstream');
            for my $key (qw(handle_dispatch_upstream_helper handle_dispatch_upstream_poll)) {
                push @{$mine{$key}}, split / /, $out->{$key} if $out && $out->{$key};
            }
            $out = run_system_dispatch($system);
            push @system, $out if $out;
        }
        print STDERR "loops.pl: dispatch, round $round/$opt{rounds} done\n";
    }
    my %median;
    for my $name (sort { order_of($a) <=> order_of($b) || $a cmp $b } keys %mine) {
        my @v = @{$mine{$name}};
        $median{$name} = median(@v);
        printf "%s: %.1f ns/op\n", $name, $median{$name};
        printf "# %s: %d repetitions: %s (spread %.1f%%)\n", $name, scalar @v,
            join(' ', map { sprintf '%.1f', $_ } @v), spread(@v);
    }
    for my $mode ('run_once', 'run', "x$PER_ITERATION") {
        my ($n, $f) = ("handle_dispatch_ev_native_$mode", "ev_io_$mode");
        printf "%s/%s: %.2f\n", $n, $f, $median{$n} / $median{$f}
            if $median{$n} && $median{$f};
    }
    if (!@system) {
        print "# system module: not measured", $system ? " (its runs failed)" : '', "\n";
        return;
    }
    my @v = map { $_->{handle_dispatch} } @system;
    $median{upstream} = median(@v);
    my %so = map { $_->{xs_object} => 1 } @system;
    print "# upstream: bench/dispatch.pl (Bench::Loop, a minimal Perl loop, helper called "
        . "directly, nothing polled) under $SYSTEM{implementation}, $_\n"
        for sort keys %so;
    printf "handle_dispatch_upstream: %.1f ns/op\n", $median{upstream};
    printf "# handle_dispatch_upstream: %d runs, medians of each: %s (spread %.1f%%)\n",
        scalar @v, join(' ', map { sprintf '%.1f', $_ } @v), spread(@v);
    for my $name (grep { /^handle_dispatch_/ } sort keys %mine) {
        printf "%s/handle_dispatch_upstream: %.3f\n", $name, $median{$name} / $median{upstream};
    }
    if (my $poll = $median{handle_dispatch_upstream_poll}) {
        print "# upstream_poll: the system module, readiness to coderef: poll() from Perl, "
            . "then its helper (the same dispatch as the native loop's, syscall included)\n";
        for my $name (grep { /^handle_dispatch_(?:ev_native|default|anyevent)/ } sort keys %mine) {
            printf "%s/handle_dispatch_upstream_poll: %.3f\n", $name, $median{$name} / $poll;
        }
    }
    return;
}

sub order_of {
    my ($name) = @_;
    my $i = 0;
    for my $loop (@LOOPS) {
        return $i if $name =~ /_\Q$loop\E_/;
        $i++;
    }
    return $i;
}

# The path of the system's Sys/Virt/Event.pm (not this tree's), or undef.
sub system_module {
    my $code = 'eval { require Sys::Virt }; require Sys::Virt::Event; '
        . 'print $INC{"Sys/Virt/Event.pm"}';
    my $out = `'$^X' -e '$code' 2>&1`;
    if ($? != 0) {
        print "# system module: not installed (Debian: libsys-virt-perl)\n";
        return undef;
    }
    if (index($out, "$ROOT/") == 0) {
        print "# system module: perl without blib loads this tree's ($out; PERL5LIB?)\n";
        return undef;
    }
    $SYSTEM{implementation} = $out;
    return $out;
}

# bench/dispatch.pl under the system's module: its handle_dispatch.
sub run_system_dispatch {
    my ($system) = @_;
    my @cmd = ($^X, "$ROOT/bench/dispatch.pl", '--reps', $opt{reps}, '--time', $opt{time},
               '--churn', 0, '--watches', 16);
    my $text = capture(\@cmd, $opt{timeout} * 2) // return undef;
    my %run;
    $run{implementation} = $1 if $text =~ /^implementation: (\S+)/m;
    $run{xs_object} = $1 if $text =~ /^xs_object: (.*)$/m;
    $run{handle_dispatch} = $1 if $text =~ /^handle_dispatch: (\S+) ns\/op$/m;
    if (($run{implementation} // '') ne $system || !$run{handle_dispatch}) {
        print "# system dispatch.pl run: unexpected output:\n", map { "#   $_\n" }
            split /\n/, $text;
        return undef;
    }
    return \%run;
}

# --------------------------------------------------------------------------
# instructions per event under callgrind
# --------------------------------------------------------------------------

sub callgrind_part {
    my ($n1, $n2) = split /,/, $opt{cg_events};
    if (!($n1 && $n2 && $n2 > $n1)) {
        print "\n# callgrind: --cg-events wants two counts, the second larger\n";
        return;
    }
    if (system('valgrind --version >/dev/null 2>&1') != 0) {
        print "\n# callgrind: not measured: valgrind is not installed\n";
        return;
    }
    require File::Path;
    require File::Temp;
    my $dir = $opt{cg_keep} // File::Temp::tempdir('loopscgXXXXXX', TMPDIR => 1, CLEANUP => 1);
    File::Path::make_path($dir) if $opt{cg_keep} && !-d $dir;
    my @where = grep { $WHERE{$_} } qw(test remote);
    print "\n# callgrind: user-space instructions (Ir) per event, the whole client process; "
        . "each figure from two runs of $n1 and $n2 events (the difference over "
        . ($n2 - $n1) . " removes startup), minus the same for the operations alone "
        . "(same loop registered, no event callback, the loop never run)\n";
    my %ir;     # $ir{$where}{$what}{$loop} = Ir per op (+event)
    my %files;  # the same keys: [file of n1, file of n2]
    for my $where (@where) {
        for my $what ('ops', @WORKLOADS) {
            for my $loop (@LOOPS) {
                my @total;
                for my $n ($n1, $n2) {
                    my $file = "$dir/$where.$what.$loop.$n.out";
                    my $spec = "events,loop=$loop,where=$where,workload="
                        . ($what eq 'ops' ? 'ops' : $what) . ",count=$n,burst=$opt{burst}";
                    my $out = run_child($spec, loop => $loop, uri => $WHERE{$where},
                                        callgrind => $file);
                    my $total = $out && callgrind_total($file);
                    last unless $total;
                    push @total, $total;
                    push @{$files{$where}{$what}{$loop}}, $file;
                }
                $ir{$where}{$what}{$loop} = ($total[1] - $total[0]) / ($n2 - $n1)
                    if @total == 2;
            }
            print STDERR "loops.pl: callgrind, $where $what done\n";
        }
    }
    for my $where (@where) {
        for my $loop (@LOOPS) {
            my $ops = $ir{$where}{ops}{$loop} // next;
            printf "ir_ops_%s_%s: %.0f Ir/op\n", $where, $loop, $ops;
        }
        for my $wl (@WORKLOADS) {
            my (%event, %both);
            for my $loop (@LOOPS) {
                my ($total, $ops) = ($ir{$where}{$wl}{$loop}, $ir{$where}{ops}{$loop});
                if (!defined $total || !defined $ops) {
                    print "# ir_${wl}_${where}_$loop: not measured (a run failed)\n";
                    next;
                }
                $event{$loop} = $total - $ops;
                $both{$loop} = $total;
                printf "ir_%s_%s_%s: %.0f Ir/event\n", $wl, $where, $loop, $event{$loop};
                printf "# ir_%s_%s_%s: %.0f Ir per operation and event, minus %.0f "
                    . "Ir per operation alone\n", $wl, $where, $loop, $total, $ops;
            }
            for my $loop (grep { $_ ne 'default' && defined $event{$_} } @LOOPS) {
                printf "ir_%s_%s_%s/ir_%s_%s_default: %.3f\n", $wl, $where, $loop, $wl,
                    $where, $event{$loop} / $event{default}
                    if $event{default};
            }
            # the operation's cost depends on the loop too over the daemon (the
            # remote driver turns its socket's watch off and on around each call)
            for my $loop (grep { defined $both{$_} } @LOOPS) {
                printf "ir_op_event_%s_%s_%s: %.0f Ir/op\n", $wl, $where, $loop, $both{$loop};
            }
            for my $loop (grep { $_ ne 'default' && defined $both{$_} } @LOOPS) {
                printf "ir_op_event_%s_%s_%s/ir_op_event_%s_%s_default: %.3f\n", $wl, $where,
                    $loop, $wl, $where, $both{$loop} / $both{default}
                    if $both{default};
            }
        }
    }
    if ($opt{cg_top}) {
        my $span = $n2 - $n1;
        for my $where (@where) {
            for my $wl (@WORKLOADS) {
                my %p = map {
                    $_ => callgrind_profile($files{$where}{$wl}{$_}, $files{$where}{ops}{$_}, $span)
                } grep { $files{$where}{$wl}{$_} } @LOOPS;
                print_profile("ir_${wl}_$where", 'event', ev_native => $p{ev_native},
                              default => $p{default});
                print_profile("ir_${wl}_$where", 'event', anyevent_ev => $p{anyevent_ev},
                              ev_native => $p{ev_native});
            }
        }
    }
    callgrind_dispatch($dir);
    print "# callgrind output files kept in $dir\n" if $opt{cg_keep};
    return;
}

# Ir per dispatch of a public watch, and of the system module's helper
# called directly: user space only, so without the cost of the system
# calls (epoll_wait, and the native loop's poll) that the ns include.
sub callgrind_dispatch {
    my ($dir) = @_;
    my ($d1, $d2) = (4800, 24000);      # multiples of $PER_ITERATION
    my @cases = map { [ev_native => $_] } ('handle_dispatch_ev_native_run_once',
        'handle_dispatch_ev_native_run', "handle_dispatch_ev_native_x$PER_ITERATION",
        'ev_io_run_once', 'ev_io_run', "ev_io_x$PER_ITERATION");
    push @cases, [default => 'handle_dispatch_default_run_once'],
                 [anyevent_perl => 'handle_dispatch_anyevent_perl_run_once'];
    push @cases, [upstream => 'handle_dispatch_upstream_helper'],
                 [upstream => 'handle_dispatch_upstream_poll']
        if $SYSTEM{implementation} || system_module();
    my (%ir, %files);
    for my $case (@cases) {
        my ($loop, $name) = @$case;
        next unless $loop eq 'upstream' || grep { $_ eq $loop } @LOOPS;
        my @total;
        for my $n ($d1, $d2) {
            my $file = "$dir/dispatch.$name.$n.out";
            my $out = run_child("dispatch,loop=$loop,case=$name,count=$n",
                                loop => $loop, callgrind => $file);
            my $total = $out && callgrind_total($file);
            last unless $total;
            push @total, $total;
            push @{$files{$name}}, $file;
        }
        next unless @total == 2;
        $ir{$name} = ($total[1] - $total[0]) / ($d2 - $d1);
        printf "ir_%s: %.0f Ir/op\n", $name, $ir{$name};
    }
    print STDERR "loops.pl: callgrind, dispatch done\n";
    printf "# ir_*dispatch*, ir_ev_io_*: Ir per dispatch from runs of %d and %d dispatches\n",
        $d1, $d2;
    for my $mode ('run_once', 'run', "x$PER_ITERATION") {
        my ($n, $f) = ("handle_dispatch_ev_native_$mode", "ev_io_$mode");
        printf "ir_%s/ir_%s: %.3f\n", $n, $f, $ir{$n} / $ir{$f} if $ir{$n} && $ir{$f};
    }
    for my $up (qw(handle_dispatch_upstream_helper handle_dispatch_upstream_poll)) {
        next unless $ir{$up};
        for my $name (grep { !/upstream/ && /^handle/ } sort keys %ir) {
            printf "ir_%s/ir_%s: %.3f\n", $name, $up, $ir{$name} / $ir{$up};
        }
    }
    if ($opt{cg_top}) {
        my %p = map { $_ => callgrind_profile($files{$_}, undef, $d2 - $d1) } keys %files;
        for my $mode ('run', "x$PER_ITERATION") {
            print_profile("ir_handle_dispatch_ev_native_$mode", 'dispatch', native =>
                          $p{"handle_dispatch_ev_native_$mode"}, ev_io => $p{"ev_io_$mode"});
        }
        print_profile('ir_handle_dispatch_ev_native_run', 'dispatch',
                      native => $p{handle_dispatch_ev_native_run},
                      upstream => $p{handle_dispatch_upstream_helper});
    }
    return;
}

sub callgrind_total {
    my ($file) = @_;
    open my $fh, '<', $file or return undef;
    my $total;
    while (my $line = <$fh>) {
        $total = $1 if $line =~ /^(?:summary|totals):\s*(\d+)/;
    }
    return $total;
}

# Self Ir of every function in one callgrind output file, by
# "function [object]" (recursion levels merged, the object's base name).
sub callgrind_functions {
    my ($file) = @_;
    my %f;
    open my $fh, '-|', 'callgrind_annotate', '--inclusive=no', '--threshold=100',
        '--auto=no', $file or return \%f;
    my $in = 0;
    while (my $line = <$fh>) {
        if ($line =~ /^Ir\s+file:function/) {
            $in = 1;
            next;
        }
        next unless $in && $line =~ /^\s*([\d,]+)\s+\([\s\d.]+%\)\s+(.*?)\s*$/;
        my ($ir, $name) = ($1, $2);
        $ir =~ tr/,//d;
        $name =~ s/'\d+//g;                                  # recursion level
        $name =~ s{ \[(?:.*/)?([^/\]]+)\]$}{ [$1]};            # the object's base name
        $name =~ s/^.*:(?=[^:]+ \[|[^:]+$)//;                 # the source file
        $f{$name} += $ir;
    }
    close $fh;
    return \%f;
}

# Self Ir per unit of every function: (run of n2 - run of n1), minus the
# same for a base pair of runs if given, over the span.
sub callgrind_profile {
    my ($pair, $base, $span) = @_;
    return undef unless $pair && @$pair == 2 && (!$base || @$base == 2);
    my @f = map { callgrind_functions($_) } @$pair, ($base ? @$base : ());
    my %names = map { %$_ } @f;
    my %per;
    for my $name (keys %names) {
        my $v = ($f[1]{$name} // 0) - ($f[0]{$name} // 0);
        $v -= ($f[3]{$name} // 0) - ($f[2]{$name} // 0) if $base;
        $per{$name} = $v / $span if abs($v / $span) >= 0.5;
    }
    return \%per;
}

# The --cg-top functions whose self Ir per unit differ most between two
# profiles, then the largest in the first.
sub print_profile {
    my ($what, $unit, $name1, $p1, $name2, $p2) = @_;
    return unless $p1 && $p2;
    my $k = $opt{cg_top};
    my %all = (%$p1, %$p2);
    my %diff = map { $_ => ($p1->{$_} // 0) - ($p2->{$_} // 0) } keys %all;
    my @names = sort { abs($diff{$b}) <=> abs($diff{$a}) || $a cmp $b } keys %all;
    splice @names, $k if @names > $k;
    my ($sum1, $sum2) = (0, 0);
    $sum1 += $_ for values %$p1;
    $sum2 += $_ for values %$p2;
    printf "# profile %s: self Ir per %s, %s - %s (%.0f - %.0f), the %d largest "
        . "differences: difference, %s, %s, function [object]\n",
        $what, $unit, $name1, $name2, $sum1, $sum2, $k, $name1, $name2;
    printf "#   %+7.0f %7.0f %7.0f  %s\n", $diff{$_}, $p1->{$_} // 0, $p2->{$_} // 0, $_
        for @names;
    my @top = sort { $p1->{$b} <=> $p1->{$a} || $a cmp $b } keys %$p1;
    splice @top, $k if @top > $k;
    printf "# profile %s: the %d largest self Ir per %s in %s\n", $what, $k, $unit, $name1;
    printf "#   %7.0f  %s\n", $p1->{$_}, $_ for @top;
    return;
}

# --------------------------------------------------------------------------
# running children
# --------------------------------------------------------------------------

# Runs one slice in a fresh perl (under callgrind if asked): its
# "key value" lines as a hash, or undef (said why).
sub run_child {
    my ($spec, %a) = @_;
    local $ENV{PERL_ANYEVENT_MODEL} = 'EV' if $a{loop} =~ /^anyevent/;
    local $ENV{LOOPS_URI} = $a{uri} // '';
    # libvirtd leaves after 120 s without a client (PrivateLibvirtd's
    # --timeout), as it may during the callgrind runs on test:///default
    if ($DAEMON && $a{uri} && $a{uri} eq $WHERE{remote} && !$DAEMON->alive) {
        print "# daemon: not running; started again\n";
        eval { $DAEMON->restart; 1 } or do {
            print "# daemon: could not start again: $@";
            return undef;
        };
    }
    my $timeout = $opt{timeout} * ($a{callgrind} ? 10 : 1);
    # the system's module: a perl that does not see this build
    my @cmd = ($^X, ($a{loop} eq 'upstream' ? () : @INCS), $SCRIPT,
               '--timeout', $timeout, '--child', $spec);
    unshift @cmd, 'valgrind', '--tool=callgrind', '--quiet',
        "--callgrind-out-file=$a{callgrind}" if $a{callgrind};
    my $text = capture(\@cmd, $timeout + 10) // return undef;
    my %out = map { /^(\w+) (.*)$/ ? ($1 => $2) : () } split /\n/, $text;
    if (!$out{ok}) {
        (my $show = $text) =~ s/^/#   /mg;
        print "# slice $spec failed:\n$show";
        return undef;
    }
    # the child measured the build expected, and the loop asked for
    my ($impl) = ($out{implementation} // '') =~ /^(\S+)/;
    my $expected = $a{loop} eq 'upstream' ? $SYSTEM{implementation} : $INC{'Sys/Virt/Event.pm'};
    if (($impl // '') ne $expected) {
        print "# slice $spec measured ", $impl // 'nothing', ", not $expected\n";
        return undef;
    }
    if (!$CHECKED{$a{loop}}++) {
        print "# loop $a{loop}: registered $out{loop_class}",
            $out{backend} ? ", AnyEvent backend $out{backend}" : '', "\n";
    }
    return \%out;
}

# Runs a command, bounded in time: its STDOUT and STDERR, or undef.
sub capture {
    my ($cmd, $timeout) = @_;
    my $pid = open(my $fh, '-|') // do { print "# fork: $!\n"; return undef };
    if (!$pid) {
        open STDERR, '>&', \*STDOUT;
        exec { $cmd->[0] } @$cmd or POSIX::_exit(127);
    }
    my ($text, $timed_out) = ('');
    {
        local $SIG{ALRM} = sub { $timed_out = 1; kill 'KILL', $pid };
        alarm $timeout;
        local $/;
        $text = <$fh> // '';
        alarm 0;
    }
    close $fh;
    if ($timed_out) {
        print "# '@$cmd' took more than $timeout s: killed\n";
        return undef;
    }
    if ($?) {
        $text =~ s/^/#   /mg;
        printf "# '%s' failed (status %d):\n%s", "@$cmd", $?, $text;
        return undef;
    }
    return $text;
}

sub median {
    my @v = sort { $a <=> $b } @_;
    return undef unless @v;
    return @v % 2 ? $v[$#v / 2] : ($v[@v / 2 - 1] + $v[@v / 2]) / 2;
}

sub spread {
    my @v = sort { $a <=> $b } @_;
    my $m = median(@v);
    return $m ? 100 * ($v[-1] - $v[0]) / $m : 0;
}

# ==========================================================================
# the children: one loop registered, one measurement, "key value" lines
# ==========================================================================

sub child {
    my ($spec) = @_;
    my ($kind, @kv) = split /,/, $spec;
    my %a = map { split /=/, $_, 2 } @kv;
    $a{uri} = $ENV{LOOPS_URI};
    # a lost event or a stuck daemon must not hang the benchmark: SIGALRM,
    # left to its default action, ends the process wherever it is
    alarm $opt{timeout};
    $SIG{PIPE} = 'IGNORE';

    require Sys::Virt;
    require Sys::Virt::Event;
    my $loop = setup_loop($a{loop});
    print "implementation $INC{'Sys/Virt/Event.pm'}\n";
    print "loop_class $loop->{class}\n";
    print "backend ", AnyEvent::detect(), "\n" if $a{loop} =~ /^anyevent/;

    if ($kind eq 'events') {
        child_events($loop, %a);
    } elsif ($kind eq 'rpc') {
        child_rpc($loop, %a);
    } elsif ($kind eq 'dispatch') {
        child_dispatch($loop, %a);
    } else {
        die "unknown child kind $kind\n";
    }
    print "ok 1\n";
    return;
}

# Registers the loop; returns {class, run_until => sub ($done), wake,
# once => one iteration}.
sub setup_loop {
    my ($name) = @_;
    my %l;
    if ($name eq 'default') {
        Sys::Virt::Event::register_default();
        %l = (
            class     => 'libvirt default loop',
            wake      => sub { },
            run_until => sub {
                my ($done) = @_;
                Sys::Virt::Event::run_default() until $done->();
            },
            once      => sub { Sys::Virt::Event::run_default() },
        );
    } elsif ($name eq 'ev_native') {
        require EV;
        require Sys::Virt::Event::EV;
        my $obj = Sys::Virt::Event::EV->register;
        my $once = EV::RUN_ONCE();
        %l = (
            class     => ref $obj,
            wake      => sub { },
            run_until => sub {
                my ($done) = @_;
                EV::run($once) until $done->();
            },
            once      => sub { EV::run($once) },
        );
    } elsif ($name eq 'anyevent_ev' || $name eq 'anyevent_perl') {
        require EV;
        require AnyEvent;
        require Sys::Virt::Event::AnyEvent;
        AnyEvent::detect() eq 'AnyEvent::Impl::EV'
            or die "AnyEvent runs on ", AnyEvent::detect(), ", not EV\n";
        my $obj = Sys::Virt::Event::AnyEvent->register(
            $name eq 'anyevent_perl' ? (native => 0) : ());
        my $want = $name eq 'anyevent_perl' ? 'Sys::Virt::Event::AnyEvent'
                                             : 'Sys::Virt::Event::EV';
        ref $obj eq $want or die "$name: registered ", ref $obj, ", not $want\n";
        my $cv;
        my $once = EV::RUN_ONCE();
        %l = (
            class     => ref $obj,
            # not "if $cv": a condvar overloads &{}, and its truth costs
            # an overload lookup
            wake      => sub { $cv->send if defined $cv },
            run_until => sub {
                my ($done) = @_;
                until ($done->()) {
                    $cv = AnyEvent->condvar;
                    $cv->recv;
                }
            },
            once      => sub { EV::run($once) },
        );
    } elsif ($name eq 'upstream') {
        # the minimal Perl loop of bench/dispatch.pl, for the system module
        my $obj = Bench::Loop->new;
        $obj->register;
        %l = (class => ref $obj, object => $obj);
    } else {
        die "unknown loop $name\n";
    }
    return \%l;
}

sub cpu_time {
    return Time::HiRes::clock_gettime(Time::HiRes::CLOCK_PROCESS_CPUTIME_ID());
}

# Lifecycle events of the test driver's domain "test": suspend and
# resume alternate, one event each.
sub child_events {
    my ($loop, %a) = @_;
    my $conn = Sys::Virt->new(uri => $a{uri});
    my $dom = $conn->get_domain_by_name('test');
    # the daemon's domain is shared by the slices: start where the last left it
    my $paused = $dom->get_info->{state} == Sys::Virt::Domain::STATE_PAUSED();
    my $act = sub {
        if ($paused) { $dom->resume } else { $dom->suspend }
        $paused = !$paused;
    };
    my $k = $a{burst};
    my $wake = $loop->{wake};
    my $run_until = $loop->{run_until};

    if ($a{workload} eq 'ops') {
        # the operations alone: no callback, the loop never runs
        $act->() for 1 .. 20;
        $act->() for 1 .. $a{count};
        print "events $a{count}\n";
        return;
    }

    my ($delivered, $target, $chain) = (0, 0, 0);
    my $id = $conn->domain_event_register_any(undef,
        Sys::Virt::Domain::EVENT_ID_LIFECYCLE(), sub {
            if (++$delivered < $target) {
                $act->() if $chain;
            } else {
                $wake->();
            }
            return 0;
        });
    my $done = sub { $delivered >= $target };
    my %round = (
        # $n operations back to back, then the loop until all have arrived
        burst => sub {
            my ($n) = @_;
            ($target, $chain) = ($delivered + $n, 0);
            $act->() for 1 .. $n;
            $run_until->($done);
        },
        # each event's callback does the next operation
        chain => sub {
            my ($n) = @_;
            ($target, $chain) = ($delivered + $n, 1);
            $act->();
            $run_until->($done);
        },
        # one operation, the loop until its event, and again
        await => sub {
            my ($n) = @_;
            $chain = 0;
            for (1 .. $n) {
                $target = $delivered + 1;
                $act->();
                $run_until->($done);
            }
        },
    );
    my $round = $round{$a{workload}} or die "unknown workload $a{workload}\n";

    if ($a{count}) {
        # for callgrind: a fixed number of events after the same warm-up
        $round->(20);
        $round->($a{count});
    } else {
        $round->($k);       # warm up
        my @marks = ([Time::HiRes::time(), cpu_time()]);
        do {
            $round->($k);
            push @marks, [Time::HiRes::time(), cpu_time()];
        } while ($marks[-1][0] - $marks[0][0] < $a{seconds});
        report_rates(events => $k, @marks);
    }
    $conn->domain_event_deregister_any($id);
    return;
}

# RPC calls over the remote driver, with the loop registered.
sub child_rpc {
    my ($loop, %a) = @_;
    my $conn = Sys::Virt->new(uri => $a{uri});
    my $dom = $conn->get_domain_by_name('test');
    my $b = $a{batch};
    my $batch = sub { $dom->get_info for 1 .. $b };
    my @marks;      # [wall, cpu] at the start of each batch measured
    my $mark = sub { push @marks, [Time::HiRes::time(), cpu_time()] };
    my $more = sub { @marks < 2 || $marks[-1][0] - $marks[0][0] < $a{seconds} };
    my $tick;

    if ($a{pattern} eq 'registered') {
        $batch->() for 1 .. 4;
        $mark->();
        do { $batch->(); $mark->() } while $more->();
    } elsif ($a{pattern} eq 'between') {
        $tick = Sys::Virt::Event::add_timeout(0, sub { });
        my $once = $loop->{once};
        $batch->(), $once->() for 1 .. 4;
        $mark->();
        do { $batch->(); $once->(); $mark->() } while $more->();
    } elsif ($a{pattern} eq 'inside') {
        my ($rounds, $stop) = (0, 0);
        $tick = Sys::Virt::Event::add_timeout(0, sub {
            return if $stop;
            # each mark after the warm-up closes the interval of a batch
            # and the loop iteration that led to this call
            $mark->() if ++$rounds > 4;
            if (!$more->()) {
                $stop = 1;
                $loop->{wake}->();
                return;
            }
            $batch->();
        });
        $loop->{run_until}->(sub { $stop });
    } else {
        die "unknown pattern $a{pattern}\n";
    }
    Sys::Virt::Event::remove_timeout($tick) if $tick;
    report_rates(calls => $b, @marks);
    return;
}

# Prints the totals of the intervals between marks ([wall, cpu] each),
# UNITS done in every one, and the median of their rates: a moment when
# the machine gave the child no CPU spoils an interval, not the slice.
sub report_rates {
    my ($what, $units, @marks) = @_;
    my (@wall, @cpu);
    for my $i (1 .. $#marks) {
        my ($w, $c) = map { $marks[$i][$_] - $marks[$i - 1][$_] } 0, 1;
        push @wall, $w > 0 ? $units / $w : ();
        push @cpu, $c > 0 ? $units / $c : ();
    }
    printf "%s %d\nwall %.6f\ncpu %.6f\nintervals %d\nwall_rate %.1f\ncpu_rate %.1f\n",
        $what, $units * $#marks, $marks[-1][0] - $marks[0][0], $marks[-1][1] - $marks[0][1],
        scalar @wall, median(@wall) // 0, median(@cpu) // 0;
    return;
}

# A public watch on a pipe kept readable, dispatched by the loop; beside
# it, EV's own watcher on the same pipe with the same coderef (the floor of
# any dispatch through EV), and for the system's module the helper called
# directly by a minimal Perl loop, as bench/dispatch.pl does.  Each case
# has a watch of its own, enabled only while the case runs.  Prints the
# CPU ns of each repetition, or with count=N runs one case N times (for
# callgrind).
sub child_dispatch {
    my ($loop, %a) = @_;
    pipe(my $rd, my $wr) or die "pipe: $!\n";
    syswrite $wr, 'x' or die "write: $!\n";
    my $fd = fileno $rd;
    my $readable = Sys::Virt::Event::HANDLE_READABLE();
    my $name = $a{loop};
    my $empty = sub { };
    my $left = 0;
    my $breaking = sub { --$left or EV::break() };

    # a public watch with the coderef, disabled until its case runs
    my $public = sub {
        my ($code) = @_;
        my $w = Sys::Virt::Event::add_handle($fd, $readable, $code);
        Sys::Virt::Event::update_handle($w, 0);
        return (sub { Sys::Virt::Event::update_handle($w, $readable) },
                sub { Sys::Virt::Event::update_handle($w, 0) });
    };
    my $ev_io = sub {
        my ($code) = @_;
        my $w;
        return (sub { $w = EV::io($fd, EV::READ(), $code) }, sub { undef $w });
    };
    my $once = $name =~ /^(?:ev_native|anyevent)/ ? EV::RUN_ONCE() : 0;
    my $run_once = $name eq 'default'
        ? sub { Sys::Virt::Event::run_default() for 1 .. $_[0] }
        : sub { EV::run($once) for 1 .. $_[0] };
    my $run = sub { $left = $_[0]; EV::run() };

    my @cases;      # [name, enable, disable, body($n)]
    if ($name eq 'upstream') {
        my $impl = $loop->{object};
        my $w = Sys::Virt::Event::add_handle($fd, $readable, $empty);
        my @args = ($w, $fd, $readable, @{$impl->{handles}{$w}}[2, 3]);
        push @cases, ['handle_dispatch_upstream_helper', sub { }, sub { }, sub {
            for (1 .. $_[0]) { $impl->_run_handle_callback(@args) }
        }];
        # the whole of a readiness-to-coderef dispatch: the minimal loop
        # asks poll() (IO::Poll's own XSUB, no object) which descriptor
        # is ready, then calls the helper
        require IO::Poll;
        my $pollin = IO::Poll::POLLIN();
        push @cases, ['handle_dispatch_upstream_poll', sub { }, sub { }, sub {
            for (1 .. $_[0]) {
                my ($f, $m) = ($fd, $pollin);
                IO::Poll::_poll(-1, $f, $m);
                $impl->_run_handle_callback(@args) if $m & $pollin;
            }
        }];
    } else {
        push @cases, ["handle_dispatch_${name}_run_once", $public->($empty), $run_once];
        push @cases, ["handle_dispatch_${name}_run", $public->($breaking), $run]
            if $name ne 'default';
        push @cases, ['ev_io_run_once', $ev_io->($empty), $run_once],
                     ['ev_io_run', $ev_io->($breaking), $run]
            if $name eq 'ev_native';
        if ($name eq 'ev_native') {
            # 16 watches on the pipe: 16 dispatches per loop iteration, so
            # the iteration's own cost (epoll_wait) is shared by 16
            my @public = map { [$public->($empty)] } 1 .. $PER_ITERATION;
            my @ev = map { [$ev_io->($empty)] } 1 .. $PER_ITERATION;
            my $all = sub { my ($list, $i) = @_; sub { $_->[$i]->() for @$list } };
            my $iterations = sub { EV::run($once) for 1 .. $_[0] / $PER_ITERATION };
            push @cases,
                ["handle_dispatch_ev_native_x$PER_ITERATION", $all->(\@public, 0),
                 $all->(\@public, 1), $iterations, $PER_ITERATION],
                ["ev_io_x$PER_ITERATION", $all->(\@ev, 0), $all->(\@ev, 1), $iterations,
                 $PER_ITERATION];
        }
        # a dispatch reaches the coderef, once per iteration
        my $count = 0;
        my ($on, $off) = $public->(sub { $count++ });
        $on->();
        $run_once->(10);
        $off->();
        die "$name: 10 iterations made $count dispatches\n" unless $count == 10;
    }

    if ($a{count}) {
        my ($case) = grep { $_->[0] eq $a{case} } @cases or die "no case $a{case}\n";
        run_case($case, 160);
        run_case($case, $a{count});
        print "dispatches $a{count}\n";
        return;
    }
    my %ns;
    my @n = map { calibrate($_, $a{time}) } @cases;
    for my $rep (1 .. $a{reps}) {
        for my $i (0 .. $#cases) {
            push @{$ns{$cases[$i][0]}}, run_case($cases[$i], $n[$i]);
        }
    }
    printf "%s %s\n", $_->[0], join(' ', map { sprintf '%.2f', $_ } @{$ns{$_->[0]}})
        for @cases;
    return;
}

# CPU ns per dispatch for $n dispatches.
sub run_case {
    my ($case, $n) = @_;
    $case->[1]->();
    my $c0 = cpu_time();
    $case->[3]->($n);
    my $ns = (cpu_time() - $c0) * 1e9 / $n;
    $case->[2]->();
    return $ns;
}

# The number of dispatches (a multiple of the case's unit) that takes
# about $seconds of CPU; the runs on the way warm everything up.
sub calibrate {
    my ($case, $seconds) = @_;
    my $unit = $case->[4] || 1;
    my $n = 100 * $unit;
    while (1) {
        my $ns = run_case($case, $n);
        return $unit * (int($seconds * 1e9 / $ns / $unit) || 1)
            if $ns * $n >= 0.02e9 || $n >= 1e8;
        $n *= 10;
    }
}

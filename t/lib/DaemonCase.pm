package DaemonCase;

# What the tests that run a case under each Perl loop kind share
# (t/48-sys-virt-callbacks.t, t/83-daemon-signals.t): the loop kinds, one
# small interface over them, and a way to run a case in a child process
# under a time limit (libvirt takes one event loop per process) and read
# back what it reported.  The conformance suite has its own, over every
# loop the distribution ships: t/lib/Loops.pm.
#
# Loop kinds:
#   TestLoop       t/lib/TestLoop.pm: poll(), frees inside remove_* as
#                  upstream Sys::Virt's loops do
#   AnyEvent/EV    Sys::Virt::Event::AnyEvent on AnyEvent's EV backend
#                  (its Perl loop: native => 0)
#   AnyEvent/Perl  the same on AnyEvent's pure-Perl backend
# When PERL_ANYEVENT_MODEL is set, AnyEvent runs under that backend only.
#
# In the child, a case reports with report(key => value); the parent gets
# the values back from run_case().

use strict;
use warnings;

use Exporter 'import';
use Test::More;
use Time::HiRes ();

use TestUtil qw(in_child anyevent_run_until report);

our @EXPORT_OK = qw(loop_kinds run_case report elapsed_ms);

# ([kind, why it cannot run or undef], ...)
sub loop_kinds {
    my @models = $ENV{PERL_ANYEVENT_MODEL} ? ($ENV{PERL_ANYEVENT_MODEL}) : qw(EV Perl);
    return ['TestLoop', undef],
           map { ["AnyEvent/$_", _anyevent_missing($_)] } @models;
}

# Found in @INC, without loading it into this (the parent) process.
sub _installed {
    my ($module) = @_;
    (my $file = "$module.pm") =~ s{::}{/}g;
    return scalar grep { !ref && -f "$_/$file" } @INC;
}

sub _anyevent_missing {
    my ($model) = @_;
    return 'AnyEvent is not installed' unless _installed('AnyEvent');
    return "AnyEvent has no backend '$model'"
        unless _installed("AnyEvent::Impl::$model");
    return "$model is not installed" if $model eq 'EV' && !_installed('EV');
    return 'Sys::Virt::Event::AnyEvent (lib/Sys/Virt/Event/AnyEvent.pm) is not there yet'
        unless _installed('Sys::Virt::Event::AnyEvent');
    return;
}

# run_case(NAME, sub { ... }, timeout => SECONDS)
# Runs the code in a child; asserts that it ended in time, by itself and
# without dying; returns { key => value } from its report() lines, plus
# the whole output under ''.
sub run_case {
    my ($name, $code, %opts) = @_;
    my $r = in_child($code, timeout => $opts{timeout} || 15);
    ok(!$r->{timed_out}, "$name: finished within its time limit (nothing hangs)");
    is($r->{signal}, 0, "$name: not killed by a signal");
    is($r->{exit}, 0, "$name: exited normally")
        or diag("child output:\n$r->{output}");
    my %out = ('' => $r->{output});
    for my $line (split /\n/, $r->{output}) {
        $out{$1} = $2 if $line =~ /^(\w[\w.]*)=(.*)\z/;
    }
    return \%out;
}

sub elapsed_ms {
    my ($since, $until) = @_;
    return sprintf '%.1f', (($until // Time::HiRes::time()) - $since) * 1000;
}

# -- the loop, in the child ----------------------------------------------

# DaemonCase->loop(KIND): makes and registers the loop.
sub loop {
    my ($class, $kind) = @_;
    my $self = bless { kind => $kind }, $class;
    if ($kind eq 'TestLoop') {
        require TestLoop;
        $self->{loop} = TestLoop->new;
        $self->{loop}->register;
    } elsif ($kind =~ m{^AnyEvent/(\w+)\z}) {
        my $model = $1;
        local $ENV{PERL_ANYEVENT_MODEL} = $model;
        require AnyEvent;
        require Sys::Virt::Event::AnyEvent;
        $self->{loop} = Sys::Virt::Event::AnyEvent->register(native => 0);
        my $detected = AnyEvent::detect();
        die "AnyEvent chose $detected, not AnyEvent::Impl::$model\n"
            unless $detected eq "AnyEvent::Impl::$model";
    } else {
        die "unknown loop kind '$kind'\n";
    }
    return $self;
}

sub kind { return $_[0]{kind} }

# Runs the loop until $cond returns true or $seconds pass; true if it did.
sub run_until {
    my ($self, $cond, $seconds) = @_;
    return $self->{loop}->run_until($cond, $seconds) if $self->{kind} eq 'TestLoop';
    return anyevent_run_until($cond, $seconds);
}

# Lets what is due run: 0 ms timers, queued frees.
sub drain {
    my ($self) = @_;
    if ($self->{kind} eq 'TestLoop') {
        $self->{loop}->run_once(10) for 1 .. 3;
        # TestLoop frees inside remove_*, where the free is queued until
        # the next safe point; when nothing is left to dispatch, a public
        # call from the top level is one.
        Sys::Virt::Event::remove_timeout(Sys::Virt::Event::add_timeout(-1, sub {}));
        return 1;
    }
    return $self->{loop}->drain(2);
}

sub watches {
    my ($self) = @_;
    return $self->{kind} eq 'TestLoop'
        ? scalar keys %{$self->{loop}{handles}}
        : scalar(my @w = $self->{loop}->watches);
}

sub timers {
    my ($self) = @_;
    return $self->{kind} eq 'TestLoop'
        ? scalar keys %{$self->{loop}{timeouts}}
        : scalar(my @t = $self->{loop}->timers);
}

sub is_idle {
    my ($self) = @_;
    return $self->{kind} eq 'TestLoop' ? $self->{loop}->idle : $self->{loop}->is_idle;
}

1;

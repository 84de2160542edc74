package Loops;

# Every event loop the distribution ships, behind one small interface:
# register it in this process, run it until a condition or a deadline,
# let what is due run (drain), and look inside where the loop allows.
# t/lib/LoopConformance.pm runs the same cases through it against each
# loop.  A loop added later needs one entry in %KINDS below and its thin
# test file (t/5N-conformance-KIND.t); one of a new sort also needs its
# driver class at the end of this file (_register, _run_until, _drain,
# and the introspection methods where it has them).
#
#   my $why = Loops::missing('anyevent-ev');    # undef, or why it cannot run here
#   my $loop = Loops->start('anyevent-ev');     # registers it: once per process
#   $loop->run_until(sub { $done }, 5);         # true if $done became true in time
#   $loop->run_for(0.2);
#   $loop->drain;                               # queued frees, 0 ms timers
#   if ($loop->introspects) { $loop->watches; $loop->timers; $loop->is_idle }
#
# libvirt takes one event loop per process, so start() is called once per
# process, in a child (TestUtil::in_child): the process that runs a test
# file registers nothing, and loads no AnyEvent backend.

use strict;
use warnings;

use Carp ();
use POSIX ();
use Time::HiRes ();

use TestUtil qw(in_child);

# Each kind:
#   what           one line for the test output
#   needs          [module, why it cannot run without it], in order
#   introspection  the loop can list its watches and timers, and say
#                  whether it is idle (watches, timers, is_idle)
#   forked_run     unset when the loop runs in a forked child; else the
#                  pattern of the croak that running it there gives, by
#                  design
#   class          the driver class below
#   args           passed to the class's _register
my %KINDS = (
    default => {
        what          => "libvirt's default loop (register_default, run_default)",
        needs         => [],
        introspection => 0,
        forked_run    => qr/^Sys::Virt::Event::run_default: this process was forked after libvirt's default event loop was registered/,
        class         => 'Loops::Default',
    },
    testloop => {
        what          => 't/lib/TestLoop.pm, a poll() loop that frees inside remove_* as upstream\'s do',
        needs         => [['TestLoop', 't/lib/TestLoop.pm does not load']],
        introspection => 1,
        class         => 'Loops::TestLoop',
    },
    'anyevent-perl' => {
        what          => "Sys::Virt::Event::AnyEvent on AnyEvent's pure-Perl backend",
        needs         => [['AnyEvent', 'AnyEvent is not installed'],
                          ['AnyEvent::Impl::Perl', "AnyEvent has no backend 'Perl'"],
                          ['Sys::Virt::Event::AnyEvent', 'Sys::Virt::Event::AnyEvent does not load']],
        introspection => 1,
        class         => 'Loops::AnyEvent',
        args          => { model => 'Perl' },
    },
    'anyevent-ev' => {
        what          => 'Sys::Virt::Event::AnyEvent over EV, through its Perl path (native => 0)',
        needs         => [['AnyEvent', 'AnyEvent is not installed'],
                          ['EV', 'EV is not installed'],
                          ['AnyEvent::Impl::EV', "AnyEvent has no backend 'EV'"],
                          ['Sys::Virt::Event::AnyEvent', 'Sys::Virt::Event::AnyEvent does not load']],
        introspection => 1,
        class         => 'Loops::AnyEvent',
        args          => { model => 'EV', native => 0 },
    },
    'ev-native' => {
        what          => 'Sys::Virt::Event::EV, libvirt\'s loop in C on libev, run with EV::run',
        needs         => [['EV', 'EV is not installed'],
                          ['Sys::Virt::Event::EV', 'Sys::Virt::Event::EV is not built']],
        introspection => 1,
        class         => 'Loops::EVNative',
    },
);

sub kinds { return sort keys %KINDS }

sub kind_info {
    my ($kind) = @_;
    my $info = $KINDS{$kind} or Carp::croak("Loops: unknown loop kind '$kind'");
    return $info;
}

# Why the kind cannot run here, or undef.  Found out in a child, so that
# this process loads neither the modules nor an AnyEvent backend.
sub missing {
    my ($kind) = @_;
    my $needs = kind_info($kind)->{needs};
    return unless @$needs;
    my $r = in_child(sub {
        for my $i (0 .. $#$needs) {
            (my $file = "$needs->[$i][0].pm") =~ s{::}{/}g;
            next if eval { require $file; 1 };
            (my $error = $@) =~ s/\n.*//s;
            $error =~ s/ \(you may need to install.*|\s*\(\@INC contains:.*| at \S+ line \d+\.\z//;
            print "$i\n$error\n";
            POSIX::_exit(3);
        }
    }, timeout => 60);
    return if defined $r->{exit} && $r->{exit} == 0;
    my ($i, $error) = split /\n/, $r->{output};
    return "could not find out what is installed: $r->{output}"
        unless defined $i && $i =~ /^\d+\z/ && $needs->[$i];
    return "$needs->[$i][1] ($error)";
}

# Loops->start(KIND): registers the kind's loop in this process and
# returns its driver.
sub start {
    my ($class, $kind) = @_;
    my $info = kind_info($kind);
    my $self = bless { kind => $kind, info => $info }, $info->{class};
    $self->_register($info->{args} || {});
    return $self;
}

sub kind        { return $_[0]{kind} }
sub what        { return $_[0]{info}{what} }
sub introspects { return $_[0]{info}{introspection} }

# undef when the loop may run in a forked child, else the pattern of the
# croak that running it there gives.
sub forked_run_croaks { return $_[0]{info}{forked_run} }

# The registered loop object, where there is one.
sub impl { return $_[0]{impl} }

# How much longer waits may take under valgrind (maint/memcheck).
sub patience { return $ENV{SVE_UNDER_MEMCHECK} ? 4 : 1 }

# Runs the loop until $cond returns true or $seconds pass; returns true
# if $cond became true.  Subclasses implement _run_until($cond, $seconds),
# where $cond may be undef: run until the deadline.
sub run_until {
    my ($self, $cond, $seconds) = @_;
    return 1 if $cond->();
    $self->_run_until($cond, $seconds);
    return $cond->() ? 1 : 0;
}

# Runs the loop for $seconds, whatever happens meanwhile.
sub run_for {
    my ($self, $seconds) = @_;
    $self->_run_until(undef, $seconds);
    return;
}

# Lets what is due run: frees queued by removals, 0 ms timers libvirt
# uses to deliver queued events.  True when the loop says it is drained
# (for a loop that cannot tell, after a few iterations).
sub drain {
    my ($self, $seconds) = @_;
    return $self->_drain(defined $seconds ? $seconds : 2 * patience());
}

sub _no_introspection {
    my ($self, $what) = @_;
    Carp::croak("Loops: the $self->{kind} loop cannot list its $what");
}

sub watches { $_[0]->_no_introspection('watches') }
sub timers  { $_[0]->_no_introspection('timers') }
sub is_idle { $_[0]->_no_introspection('state') }

# "N watches, M timers", for diagnostics.
sub describe {
    my ($self) = @_;
    return 'no introspection' unless $self->introspects;
    return sprintf '%d watches, %d timers%s', scalar $self->watches, scalar $self->timers,
        $self->is_idle ? ', idle' : '';
}

# -- libvirt's default loop --------------------------------------------------

{
    package Loops::Default;
    our @ISA = ('Loops');

    # run_default() returns once something was dispatched: a repeating
    # timer of the driver's own bounds every iteration, so waits stay
    # bounded.  It is a public timer like any other (the cases add theirs
    # through the same API), and never removed: it is the process's last.
    my $TICK_MS = 20;

    sub _register {
        my ($self) = @_;
        Sys::Virt::Event::register_default();
        $self->{ticker} = Sys::Virt::Event::add_timeout($TICK_MS, sub { });
        return;
    }

    sub _run_until {
        my ($self, $cond, $seconds) = @_;
        my $deadline = Time::HiRes::time() + $seconds;
        until ($cond && $cond->()) {
            last if Time::HiRes::time() > $deadline;
            Sys::Virt::Event::run_default();
        }
        return;
    }

    # libvirt's default loop frees what was removed at the start of its
    # next iteration (virEventPollCleanupTimeouts/Handles); it cannot say
    # whether anything is left.
    sub _drain {
        my ($self) = @_;
        Sys::Virt::Event::run_default() for 1 .. 3;
        return 1;
    }
}

# -- t/lib/TestLoop.pm -------------------------------------------------------

{
    package Loops::TestLoop;
    our @ISA = ('Loops');

    sub _register {
        my ($self) = @_;
        require TestLoop;
        $self->{impl} = TestLoop->new;
        $self->{impl}->register;
        return;
    }

    sub _run_until {
        my ($self, $cond, $seconds) = @_;
        my $deadline = Time::HiRes::time() + $seconds;
        until ($cond && $cond->()) {
            my $left = $deadline - Time::HiRes::time();
            last if $left <= 0;
            $self->{impl}->run_once($left < 0.02 ? $left * 1000 : 20);
        }
        return;
    }

    # TestLoop frees inside remove_*; the module queues those frees and
    # asks the loop for a 0 ms timer that runs them.
    sub _drain {
        my ($self, $seconds) = @_;
        return $self->run_until(sub { $self->_drained }, $seconds);
    }

    sub _drained {
        my ($self) = @_;
        return !Sys::Virt::Event::_pending_frees()
            && !grep { $_->{interval} == 0 } values %{$self->{impl}{timeouts}};
    }

    sub watches {
        my ($self) = @_;
        my @ids = sort { $a <=> $b } keys %{$self->{impl}{handles}};
        return wantarray ? @ids : scalar @ids;
    }

    sub timers {
        my ($self) = @_;
        my @ids = sort { $a <=> $b } keys %{$self->{impl}{timeouts}};
        return wantarray ? @ids : scalar @ids;
    }

    sub is_idle {
        my ($self) = @_;
        return $self->{impl}->idle && !Sys::Virt::Event::_pending_frees();
    }
}

# -- loops whose object drains and lists its watches and timers -------------

{
    package Loops::WithIntrospection;
    our @ISA = ('Loops');

    sub _drain {
        my ($self, $seconds) = @_;
        return $self->{impl}->drain($seconds);
    }

    sub watches { return $_[0]{impl}->watches }
    sub timers  { return $_[0]{impl}->timers }
    sub is_idle { return $_[0]{impl}->is_idle }
}

# -- Sys::Virt::Event::AnyEvent, Perl path ------------------------------------

{
    package Loops::AnyEvent;
    our @ISA = ('Loops::WithIntrospection');

    # args: model (AnyEvent's backend), native (0: the Perl loop even on EV)
    sub _register {
        my ($self, $args) = @_;
        # AnyEvent picks its backend when the first watcher is made
        $ENV{PERL_ANYEVENT_MODEL} = $args->{model};
        require AnyEvent;
        require Sys::Virt::Event::AnyEvent;
        # on EV, register() gives the native loop unless native => 0
        my $impl = Sys::Virt::Event::AnyEvent->register(
            exists $args->{native} ? (native => $args->{native}) : ());
        my $detected = AnyEvent::detect();
        die "AnyEvent chose $detected, not AnyEvent::Impl::$args->{model}\n"
            unless $detected eq "AnyEvent::Impl::$args->{model}";
        die 'register gave a ' . (ref $impl || 'non-object')
            . ", not the Perl loop Sys::Virt::Event::AnyEvent\n"
            unless ref $impl eq 'Sys::Virt::Event::AnyEvent';
        $self->{impl} = $impl;
        return;
    }

    # The condition is looked at every 2 ms (AnyEvent has no portable
    # hook at the end of an iteration): delays measured through it are
    # rounded up to that.
    sub _run_until {
        my ($self, $cond, $seconds) = @_;
        my $cv = AnyEvent->condvar;
        AnyEvent->now_update;
        my $check = $cond && AnyEvent->timer(after => 0.002, interval => 0.002,
                                             cb => sub { $cv->send if $cond->() });
        my $limit = AnyEvent->timer(after => $seconds, cb => sub { $cv->send });
        $cv->recv;
        return;
    }

}

# -- Sys::Virt::Event::EV, the native loop -------------------------------------

{
    package Loops::EVNative;
    our @ISA = ('Loops::WithIntrospection');

    sub _register {
        my ($self) = @_;
        require EV;
        require Sys::Virt::Event::EV;
        $self->{impl} = Sys::Virt::Event::EV->register;
        return;
    }

    # The program runs EV's default loop; a timer of its own ends it.  The
    # condition is looked at after every iteration's callbacks (a check
    # watcher of the lowest priority, called last) and before EV would
    # block (a prepare watcher: what ran after the check, such as a
    # loop's own deferred work, is seen before waiting).
    sub _run_until {
        my ($self, $cond, $seconds) = @_;
        EV::now_update();
        my @watchers;
        if ($cond) {
            my $stop = sub { EV::break() if $cond->() };
            my $check = EV::check_ns($stop);
            $check->priority(EV::MINPRI());
            $check->start;
            push @watchers, $check, EV::prepare($stop);
        }
        my $limit = EV::timer($seconds, 0, sub { EV::break() });
        EV::run();
        return;
    }

}

1;

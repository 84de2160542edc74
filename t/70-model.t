#!/usr/bin/perl
#
# A model-based random test.  A seeded, reproducible sequence of
# operations on a Perl event loop registered once: public add, update and
# remove of watches (on pipes) and timers; dispatches from the loop of
# live, removed and freed registrations (the loop keeps old $cb, $opaque
# and $ff objects and uses them later); frees inside remove_*, later from
# the top level, from inside callbacks, twice, by dropping the handles,
# and before removal (which must croak); callbacks that add, update,
# remove (themselves or others), dispatch, free or die.  After every step
# the outcome is compared with a small reference model: what is live in
# the loop, what fires when dispatched and with which arguments, which
# errors are reported, and that each coderef is released exactly once,
# after its removal, never inside a loop method or a callback.
#
#   SVE_MODEL_SEED  the seed (default: a new one; printed on failure)
#   SVE_MODEL_OPS   the number of top-level operations (default 2000)
#
# Replay a failure with the seed and count it prints:
#   SVE_MODEL_SEED=... SVE_MODEL_OPS=... prove -b t/70-model.t

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Sys::Virt::Event qw(:constants);

my $SEED = defined $ENV{SVE_MODEL_SEED} && length $ENV{SVE_MODEL_SEED}
    ? $ENV{SVE_MODEL_SEED} : int(rand(2**31));
my $OPS = defined $ENV{SVE_MODEL_OPS} && length $ENV{SVE_MODEL_OPS}
    ? $ENV{SVE_MODEL_OPS} : 2000;
BAIL_OUT("SVE_MODEL_SEED must be a non-negative integer, not '$SEED'")
    unless $SEED =~ /\A\d+\z/;
BAIL_OUT("SVE_MODEL_OPS must be a non-negative integer, not '$OPS'")
    unless $OPS =~ /\A\d+\z/;
srand($SEED);

my %KIND_NAME = (handle => 'watch', timer => 'timer');
my $ALL_EVENTS = HANDLE_READABLE | HANDLE_WRITABLE | HANDLE_ERROR | HANDLE_HANGUP;

# ---------------------------------------------------------------------
# The reference model
#
# One registration per public add, keyed by a serial number (gid):
#   kind            'handle' or 'timer'
#   id              the watch or timer number (undef if the add was refused)
#   fd, value       the descriptor, and the event mask or interval
#   live            registered (not removed, add not refused)
#   holders         how many places of the loop hold its $cb/$opaque/$ff
#   free_requested  the loop asked for the free, or dropped every handle
#                   after the removal, or the add was refused
# ---------------------------------------------------------------------

our $LOOP;
our (%reg, %live, %pending_free, %destroyed, @violations);
# Every request to free gets the next number; a safe point reached at the
# top level records the number so far: a free requested before it must
# have run by then.
my $request_seq = 0;
my $safe_seq = 0;
my $expected_calls = 0; # of the loop's add, update and remove methods
my $next_gid = 0;
my @fired;              # [gid, [args]] for each callback that ran
my @reports;            # [error, where] given to $Sys::Virt::Event::DIED
my @expected_reports;   # [qr/error/, where]
my @warnings;
our $in_callback = 0;
my $dispatching = 0;    # dispatches under way (the module defers updates)
my %deferred;           # gid => 1: updated while dispatching
my $step = 0;           # the top-level operation being run
my @history;            # the latest operations, for the failure report

# Destroyed with the coderef it is captured in: when libvirt's free
# function for a public watch or timer released it.
{
    package Guard;
    sub new { my ($class, $gid) = @_; return bless \$gid, $class }
    sub DESTROY {
        my $gid = ${$_[0]};
        my $r = $main::reg{$gid};
        $main::destroyed{$gid}++;
        delete $main::pending_free{$gid};
        my $say = sub { push @main::violations, "the coderef of registration $gid $_[0]" };
        $say->('was released twice') if $main::destroyed{$gid} > 1;
        $say->('was released while still registered') if $r->{live};
        $say->('was released before its free was requested') unless $r->{free_requested};
        $say->('was released inside a loop method') if $ModelLoop::depth;
        $say->('was released inside a callback') if $main::in_callback;
        return;
    }
}

sub request_free {
    my ($gid) = @_;
    my $r = $reg{$gid};
    return if $r->{free_requested};
    $r->{free_requested} = ++$request_seq;
    $pending_free{$gid} = $request_seq unless $destroyed{$gid};
    return;
}

# A public call or a dispatch made from the top level has returned: the
# frees requested so far must have run (the module runs its queue there).
sub reached_safe_point {
    $safe_seq = $request_seq unless $in_callback;
    return;
}

# One place fewer holds the handles; the last one going after the
# removal is, for the module, a request to free.
sub release_holder {
    my ($gid) = @_;
    my $r = $reg{$gid};
    $r->{holders}--;
    request_free($gid) if $r->{holders} == 0 && !$r->{live};
    return;
}

# ---------------------------------------------------------------------
# The loop: registered once, keeping its watches and timers the way
# t/lib/TestLoop.pm does, but told by the model which number to answer
# (the smallest free one, or a new one), whether to refuse an add, and how
# to free on remove; it counts libvirt's calls and how deep inside its
# methods libvirt is.  The model dispatches for it, in place of poll().
# ---------------------------------------------------------------------
{
    package ModelLoop;
    use parent -norequire, 'Sys::Virt::Event';

    our $depth = 0;

    sub new {
        return bless {
            handle => {}, timer => {}, later => [], next => { handle => 1, timer => 1 },
            calls => 0,
            plan_add => undef, plan_remove => undef,
        }, shift;
    }

    sub _add {
        my ($self, $kind, $fd, $value, $cb, $opaque, $ff) = @_;
        local $depth = $depth + 1;
        $self->{calls}++;
        my $plan = delete $self->{plan_add}
            or die "ModelLoop: an add the model did not plan\n";
        my $entry = { gid => $plan->{gid}, kind => $kind, fd => $fd, value => $value,
                      cb => $cb, opaque => $opaque, ff => $ff };
        main::keep_in_graveyard($entry) if $plan->{grave};
        return $plan->{refuse} if exists $plan->{refuse};
        my $id;
        if ($plan->{reuse}) {
            # the smallest number not live: libvirt only needs uniqueness
            $id = 1;
            $id++ while $self->{$kind}{$id};
        } elsif ($plan->{scatter}) {
            # any number not live: ids far apart and colliding in the maps
            do { $id = 1 + int(rand(2**31 - 2)) } while $self->{$kind}{$id};
        } else {
            $id = $self->{next}{$kind};
            $id++ while $self->{$kind}{$id};
        }
        $self->{next}{$kind} = $id + 1
            if !$plan->{scatter} && $id >= $self->{next}{$kind};
        $entry->{id} = $id;
        $self->{$kind}{$id} = $entry;
        $main::reg{$plan->{gid}}{holders}++;
        return $id;
    }

    sub _update {
        my ($self, $kind, $id, $value) = @_;
        local $depth = $depth + 1;
        $self->{calls}++;
        my $entry = $self->{$kind}{$id}
            or die "ModelLoop: update of unknown $kind $id\n";
        $entry->{value} = $value;
        return;
    }

    sub _remove {
        my ($self, $kind, $id) = @_;
        local $depth = $depth + 1;
        $self->{calls}++;
        my $policy = delete $self->{plan_remove}
            or die "ModelLoop: a remove the model did not plan\n";
        my $entry = delete $self->{$kind}{$id} or return -1;
        if ($policy eq 'inside' || $policy eq 'inside_twice') {
            main::request_free($entry->{gid});
            $self->_free_callback_opaque($entry->{ff}, $entry->{opaque});
            $self->_free_callback_opaque($entry->{ff}, $entry->{opaque})
                if $policy eq 'inside_twice';
            main::release_holder($entry->{gid});
        } elsif ($policy eq 'later' || $policy eq 'fail') {
            push @{$self->{later}}, $entry;
        } elsif ($policy eq 'drop') {
            main::release_holder($entry->{gid});
        }
        return $policy eq 'fail' ? -1 : 0;
    }

    sub add_handle     { my $s = shift; return $s->_add(handle => @_) }
    sub add_timeout    { my $s = shift; return $s->_add(timer => undef, @_) }
    sub update_handle  { my $s = shift; return $s->_update(handle => @_) }
    sub update_timeout { my $s = shift; return $s->_update(timer => @_) }
    sub remove_handle  { my $s = shift; return $s->_remove(handle => @_) }
    sub remove_timeout { my $s = shift; return $s->_remove(timer => @_) }

    sub idle {
        my ($self) = @_;
        return !%{$self->{handle}} && !%{$self->{timer}} && !@{$self->{later}};
    }

    # The loop's dispatch of one entry, as run_once would do it.
    sub dispatch {
        my ($self, $entry, $id, $events) = @_;
        if ($entry->{kind} eq 'handle') {
            $self->_run_handle_callback($id, $entry->{fd}, $events,
                                        $entry->{cb}, $entry->{opaque});
        } else {
            $self->_run_timeout_callback($id, $entry->{cb}, $entry->{opaque});
        }
        return;
    }
}

# Handles the loop keeps after it is done with them (and the ones a loop
# kept of a refused add), to dispatch and free later.
my @graveyard;

sub keep_in_graveyard {
    my ($entry) = @_;
    push @graveyard, { %$entry };
    $reg{$entry->{gid}}{holders}++;
    return;
}

# ---------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------

# The first failure wins: one found inside a callback is caught by the
# module (and reported as that callback's death), so it is kept here too.
our $first_failure;

sub model_fail {
    my ($msg) = @_;
    $first_failure = $msg unless defined $first_failure;
    die { model_failure => $msg };
}

sub check {
    my ($ok, $msg) = @_;
    model_fail($msg) unless $ok;
    return;
}

sub croaks_like {
    my ($code, $re, $what) = @_;
    local $@;
    my $ok = eval { $code->(); 1 };
    my $err = $@;
    die $err if ref $err;                  # a model failure from a callback
    check(!$ok, "$what: expected a croak matching $re, but it returned");
    check($err =~ $re, "$what: expected a croak matching $re, got: $err");
    return;
}

sub lives {
    my ($code, $what) = @_;
    local $@;
    my @ret;
    my $ok = eval { @ret = $code->(); 1 };
    my $err = $@;
    die $err if ref $err;
    check($ok, "$what: died: $err");
    return wantarray ? @ret : $ret[0];
}

sub explain_entry {
    my ($e) = @_;
    return 'nothing' unless $e;
    return join ' ', map { "$_=" . (defined $e->{$_} ? $e->{$_} : 'undef') } qw(gid kind fd value);
}

sub expect_fired {
    my ($before, $gid, @args) = @_;
    my @new = @fired[$before .. $#fired];
    if (defined $gid) {
        model_fail("registration $gid did not fire") unless @new;
        my ($who, $got) = @{$new[0]};
        check($who == $gid, "registration $who fired instead of $gid");
        my $same = @$got == @args;
        $same &&= $got->[$_] == $args[$_] for 0 .. $#args;
        model_fail("registration $gid fired with (@$got), expected (@args)") unless $same;
    } else {
        model_fail("a dispatch that must be skipped fired registration $new[0][0]") if @new;
    }
    return;
}

# After every top-level step: libvirt called the loop's methods as often
# as the model says; the loop holds as many registrations as the model
# (and, every few steps, exactly the live ones, with the right
# descriptors, masks and intervals); nothing was reported or warned that
# the model did not expect; no coderef was released at a wrong time; and
# every free requested before the latest safe point has run.
sub check_step {
    my ($full) = @_;
    model_fail($first_failure) if defined $first_failure;
    model_fail("unexpected warning: $warnings[0]") if @warnings;
    model_fail($violations[0]) if @violations;
    model_fail("libvirt called the loop's methods $LOOP->{calls} times, "
               . "the model expected $expected_calls") if $LOOP->{calls} != $expected_calls;
    # (messages are only built for a mismatch: this runs after every step)
    for my $kind (qw(handle timer)) {
        my $in_loop = $LOOP->{$kind};
        my $model = $live{$kind};
        if (keys %$in_loop != keys %$model) {
            model_fail(sprintf('the loop has %d live %ss, the model %d',
                               scalar keys %$in_loop, $KIND_NAME{$kind}, scalar keys %$model));
        }
        next unless $full;
        for my $id (keys %$model) {
            my $r = $reg{$model->{$id}};
            my $e = $in_loop->{$id};
            next if $e && $e->{gid} == $r->{gid} && $e->{value} == $r->{value}
                && ($kind eq 'timer' || $e->{fd} == $r->{fd});
            model_fail("$KIND_NAME{$kind} $id in the loop does not match registration "
                       . "$r->{gid} of the model: " . explain_entry($e) . ' vs ' . explain_entry($r));
        }
    }
    if (@reports || @expected_reports) {
        if (@reports != @expected_reports) {
            model_fail(sprintf('%d errors reported, %d expected: %s', scalar @reports,
                               scalar @expected_reports,
                               join(' | ', map { "$_->[1]: $_->[0]" } @reports)));
        }
        for my $i (0 .. $#reports) {
            my ($err, $where) = @{$reports[$i]};
            my ($re, $want) = @{$expected_reports[$i]};
            model_fail("reported '$where: $err', expected '$want' matching $re")
                unless $where eq $want && $err =~ $re;
        }
        @reports = @expected_reports = ();
    }
    my @late = sort { $a <=> $b } grep { $pending_free{$_} <= $safe_seq } keys %pending_free;
    model_fail("the free of registration(s) @late was requested but had not run "
               . 'by the next safe point') if @late;
    return;
}

# ---------------------------------------------------------------------
# Operations.  $nested is true inside a callback (libvirt is below).
# ---------------------------------------------------------------------

my @pipes;
for (1 .. 4) {
    pipe(my $r, my $w) or die "pipe: $!";
    push @pipes, $r, $w;
}

sub pick { return $_[int rand @_] }

sub chance { return rand() < $_[0] }

# The live registrations of a kind (or both), by id: a fixed order, so
# that a seed replays.  Cached until the next add or remove.
my %live_sorted;

sub live_gids {
    my ($kind) = @_;
    my @kinds = $kind ? ($kind) : qw(handle timer);
    return map {
        my $k = $_;
        @{$live_sorted{$k} ||= [map { $live{$k}{$_} } sort { $a <=> $b } keys %{$live{$k}}]};
    } @kinds;
}

sub note_op { push @history, ('  ' x $in_callback) . "$_[0]"; shift @history if @history > 40 }

sub expect_report { push @expected_reports, [@_] }

sub op_add {
    my ($kind, $nested) = @_;
    my $gid = ++$next_gid;
    my $r = $reg{$gid} = { gid => $gid, kind => $kind, live => 0, holders => 0,
                           free_requested => 0 };
    my %plan = (gid => $gid, reuse => chance(0.4), scatter => chance(0.3),
                grave => chance(0.3));
    $plan{refuse} = pick(undef, 0, -2, 'none') if !$nested && chance(0.05);
    my $value = $kind eq 'handle'
        ? pick(0, HANDLE_READABLE, HANDLE_WRITABLE, HANDLE_READABLE | HANDLE_WRITABLE)
        : pick(-1, 0, 0, 1, 50, 60_000);
    my $fd = $kind eq 'handle' ? fileno(pick(@pipes)) : undef;
    note_op("add $kind #$gid " . ($kind eq 'handle' ? "fd $fd mask $value" : "${value}ms")
            . (exists $plan{refuse} ? ' (refused)' : ''));
    # once this sub is done, the module's copy of the coderef is the only
    # thing holding the guard
    my $code = do {
        my $guard = Guard->new($gid);
        sub { main::on_fire($gid, @_) if $guard };
    };
    # the add runs the queue before it calls libvirt
    my $seq_before = $request_seq;
    if (exists $plan{refuse}) {
        # the module releases its copy itself: libvirt never will
        request_free($gid);
        expect_report(qr/^returned '.*', not a positive $KIND_NAME{$kind} id/,
                      ($kind eq 'handle' ? 'add_handle' : 'add_timeout') . ' method of ModelLoop');
    }
    $LOOP->{plan_add} = \%plan;
    $expected_calls++;
    my ($id, $err);
    {
        local $@;
        $id = eval {
            $kind eq 'handle' ? Sys::Virt::Event::add_handle($fd, $value, $code)
                              : Sys::Virt::Event::add_timeout($value, $code);
        };
        $err = $@;
    }
    undef $code;
    die $err if ref $err;
    if (exists $plan{refuse}) {
        model_fail("refused add of #$gid returned $id") if defined $id;
        check($err =~ /^Sys::Virt::Event::add_(?:handle|timeout): .*method of ModelLoop returned/,
              "refused add of #$gid: unexpected error: $err");
        check(($destroyed{$gid} || 0) == 1, "the coderef of refused add #$gid was kept");
        $safe_seq = $seq_before unless $nested;
        return 1;
    }
    check(defined $id, "add of #$gid died: $err");
    my $entry = $LOOP->{$kind}{$id};
    check($entry && $entry->{gid} == $gid, "add of #$gid returned $id, not the loop's number");
    @$r{qw(id fd value loop_value live)} = ($id, $fd, $value, $value, 1);
    $live{$kind}{$id} = $gid;
    delete $live_sorted{$kind};
    reached_safe_point();
    return 1;
}

sub op_update {
    my ($kind, $nested) = @_;
    my @gids = live_gids($kind) or return 0;
    my $r = $reg{pick(@gids)};
    my $value = $kind eq 'handle'
        ? pick(0, HANDLE_READABLE, HANDLE_WRITABLE, HANDLE_READABLE | HANDLE_WRITABLE)
        : pick(-1, 0, 5, 60_000);
    note_op("update $KIND_NAME{$kind} $r->{id} (#$r->{gid}) to $value");
    lives($kind eq 'handle'
          ? sub { Sys::Virt::Event::update_handle($r->{id}, $value) }
          : sub { Sys::Virt::Event::update_timeout($r->{id}, $value) },
          "update of #$r->{gid}");
    $r->{value} = $value;
    if ($dispatching) {
        $deferred{$r->{gid}} = 1;   # the loop hears of it after the dispatch
    } else {
        tell_loop($r, 1);
    }
    reached_safe_point();
    return 1;
}

# What the module passes on to the loop's update method: nothing when the
# mask, or a timer's interval of 0 or -1, is what the loop already has.
sub tell_loop {
    my ($r, $check) = @_;
    my $v = $r->{value};
    return if $v == $r->{loop_value} && ($r->{kind} eq 'handle' || $v <= 0);
    $expected_calls++;
    $r->{loop_value} = $v;
    check($LOOP->{$r->{kind}}{$r->{id}}{value} == $v,
          "update of #$r->{gid} did not reach the loop") if $check;
}

# The updates noted during a dispatch go to the loop when it returns, or
# before a nested dispatch starts (then checked after it: a callback may
# have changed them again).
sub flush_deferred {
    my ($check) = @_;
    for my $gid (sort { $a <=> $b } keys %deferred) {
        my $r = $reg{$gid};
        tell_loop($r, $check) if $r->{live};
    }
    %deferred = ();
}

# An update or remove of a number that is not live (removed, or never
# used) croaks before reaching libvirt.
sub op_update_dead {
    my ($kind) = @_;
    my $name = $KIND_NAME{$kind};
    my $id = chance(0.5) ? 1 + int rand 200 : $LOOP->{next}{$kind};
    return 0 if $live{$kind}{$id};
    note_op("update/remove of dead $name $id");
    my $re = qr/^Sys::Virt::Event::\w+: $name $id is not a live $name created by/;
    if (chance(0.5)) {
        croaks_like($kind eq 'handle' ? sub { Sys::Virt::Event::update_handle($id, 0) }
                                      : sub { Sys::Virt::Event::update_timeout($id, 0) },
                    $re, "update of dead $name $id");
    } else {
        croaks_like($kind eq 'handle' ? sub { Sys::Virt::Event::remove_handle($id) }
                                      : sub { Sys::Virt::Event::remove_timeout($id) },
                    $re, "remove of dead $name $id");
    }
    return 1;
}

sub op_remove {
    my ($kind, $nested, $gid) = @_;
    if (!defined $gid) {
        my @gids = live_gids($kind) or return 0;
        $gid = pick(@gids);
    }
    my $r = $reg{$gid};
    $kind = $r->{kind};
    my $policy = pick(qw(inside inside inside_twice later later drop drop fail));
    note_op("remove $KIND_NAME{$kind} $r->{id} (#$gid), loop frees: $policy");
    # libvirt considers it gone from now on, whatever the loop answers
    $r->{live} = 0;
    delete $live{$kind}{$r->{id}};
    delete $live_sorted{$kind};
    $LOOP->{plan_remove} = $policy;
    $expected_calls++;
    my $call = $kind eq 'handle' ? sub { Sys::Virt::Event::remove_handle($r->{id}) }
                                 : sub { Sys::Virt::Event::remove_timeout($r->{id}) };
    if ($policy eq 'fail') {
        croaks_like($call, qr/^Sys::Virt::Event::remove_(?:handle|timeout): .*returned -1/,
                    "failing remove of #$gid");
    } else {
        lives($call, "remove of #$gid");
    }
    reached_safe_point();
    return 1;
}

# Which arguments the loop dispatches a registration with.
sub dispatch_args {
    my ($r) = @_;
    return ($r->{id}) if $r->{kind} eq 'timer';
    my $events = int(rand($ALL_EVENTS)) + 1;
    $events &= $r->{value} | HANDLE_ERROR | HANDLE_HANGUP;
    $events ||= HANDLE_HANGUP;
    return ($r->{id}, $r->{fd}, $events);
}

# The dispatcher holds the entry while it runs (a callback may remove
# it): that is one more holder until it lets go.
sub dispatch_entry {
    my ($entry, $why) = @_;
    my $r = $reg{$entry->{gid}};
    my $before = @fired;
    if ($r->{live}) {
        my @args = dispatch_args($r);
        note_op("dispatch $why $KIND_NAME{$r->{kind}} $r->{id} (#$r->{gid}): fires");
        $r->{holders}++;
        flush_deferred(0) if $dispatching;
        $dispatching++;
        lives(sub { $LOOP->dispatch($entry, $r->{id}, $args[2]) },
              "dispatch of #$r->{gid}");
        flush_deferred(1) if !--$dispatching;
        reached_safe_point();
        undef $entry;
        release_holder($r->{gid});
        expect_fired($before, $r->{gid}, @args);
    } else {
        # skipped, whatever the numbers say: any id will do
        my $id = defined $r->{id} ? $r->{id} : 1;
        note_op("dispatch $why stale #$r->{gid}: skipped");
        lives(sub { $LOOP->dispatch($entry, $id, HANDLE_READABLE) },
              "stale dispatch of #$r->{gid}");
        expect_fired($before, undef);
    }
    return $r->{live};
}

sub op_dispatch_live {
    my ($nested) = @_;
    my @gids = grep { $_->{kind} eq 'timer' || $_->{value} } map { $reg{$_} } live_gids()
        or return 0;
    my $r = pick(@gids);
    dispatch_entry($LOOP->{$r->{kind}}{$r->{id}}, 'live');
    return 1;
}

# (No list of the candidates is made: it would hold them all while a
# callback runs.)
sub op_dispatch_stale {
    my $later = $LOOP->{later};
    my $n = @graveyard + @$later or return 0;
    my $i = int rand $n;
    dispatch_entry($i < @graveyard ? $graveyard[$i] : $later->[$i - @graveyard], 'kept');
    return 1;
}

# One run_once: every enabled watch and timer from a snapshot, in order;
# a registration an earlier callback removed is skipped.
sub op_iterate {
    my @snapshot = map { $LOOP->{$_->{kind}}{$_->{id}} }
                   grep { $_->{kind} eq 'timer' ? $_->{value} >= 0 : $_->{value} }
                   map { $reg{$_} } live_gids();
    note_op('iterate over ' . scalar(@snapshot) . ' registrations');
    # the snapshot holds them all until the iteration is over
    my @gids = map { $_->{gid} } @snapshot;
    $reg{$_}{holders}++ for @gids;
    dispatch_entry($_, 'iteration') for @snapshot;
    @snapshot = ();
    release_holder($_) for @gids;
    return 1;
}

sub op_free_later {
    my ($nested) = @_;
    my $later = $LOOP->{later};
    @$later or return 0;
    my $entry = splice @$later, int rand @$later, 1;
    my $gid = $entry->{gid};
    my $first = !$reg{$gid}{free_requested};
    note_op("free later #$gid" . ($first ? '' : ' (again)'));
    request_free($gid);
    lives(sub { $LOOP->_free_callback_opaque($entry->{ff}, $entry->{opaque}) },
          "later free of #$gid");
    # from the top level the free (and any other queued) runs at once
    reached_safe_point() if $first;
    undef $entry;
    release_holder($gid);
    return 1;
}

sub op_free_kept {
    my ($nested) = @_;
    @graveyard or return 0;
    my $entry = pick(@graveyard);
    my $r = $reg{$entry->{gid}};
    my $free = sub { $LOOP->_free_callback_opaque($entry->{ff}, $entry->{opaque}) };
    if ($r->{live}) {
        note_op("free of live #$r->{gid}: must croak");
        croaks_like($free, qr/^Sys::Virt::Event::_free_callback_opaque: $KIND_NAME{$r->{kind}} $r->{id} is still registered/,
                    "free of live #$r->{gid}");
        return 1;
    }
    my $first = !$r->{free_requested};
    note_op("free kept #$r->{gid}" . ($first ? '' : ' (again)'));
    request_free($r->{gid});
    lives($free, "free of kept #$r->{gid}");
    reached_safe_point() if $first;
    lives($free, "second free of kept #$r->{gid}") if chance(0.3);
    return 1;
}

sub op_drop_kept {
    @graveyard or return 0;
    my ($entry) = splice @graveyard, int rand @graveyard, 1;
    my $gid = $entry->{gid};
    note_op("drop kept handles of #$gid");
    undef $entry;
    release_holder($gid);
    return 1;
}

sub op_mixed {
    my @entries = map { $LOOP->{$_->{kind}}{$_->{id}} } map { $reg{$_} } live_gids();
    push @entries, @graveyard;
    my @handles = grep { $_->{kind} eq 'handle' } @entries;
    return 0 unless @handles && @entries >= 2;
    my $one = pick(@handles);
    my @others = grep { $_->{gid} != $one->{gid} } @entries or return 0;
    my $other = pick(@others);
    note_op("dispatch with the cb of #$one->{gid} and the opaque of #$other->{gid}: must croak");
    my $before = @fired;
    croaks_like(sub { $LOOP->_run_handle_callback(1, $one->{fd}, HANDLE_READABLE,
                                                  $one->{cb}, $other->{opaque}) },
                qr/^Sys::Virt::Event::_run_handle_callback: \$cb and \$opaque belong to different watches/,
                'mixed handles');
    expect_fired($before, undef);
    return 1;
}

sub op_run_pending {
    note_op('run pending frees');
    Sys::Virt::Event::_run_pending_frees();
    reached_safe_point();
    return 1;
}

# A callback ran: note it, then do what the dice say.
sub on_fire {
    my ($gid, @args) = @_;
    my $r = $reg{$gid};
    push @fired, [$gid, [@args]];
    local $in_callback = $in_callback + 1;
    my $roll = rand();
    if ($roll < 0.45) {
        return;
    } elsif ($roll < 0.55) {
        note_op("callback #$gid dies");
        expect_report(qr/^model death $gid\n\z/, "callback of $KIND_NAME{$r->{kind}} $r->{id}");
        die "model death $gid\n";
    } elsif ($roll < 0.65) {
        op_add(pick(qw(handle timer)), 1);
    } elsif ($roll < 0.75) {
        op_remove($r->{kind}, 1, $gid) if $r->{live};
    } elsif ($roll < 0.80) {
        op_remove(pick(qw(handle timer)), 1);
    } elsif ($roll < 0.85) {
        op_update(pick(qw(handle timer)), 1);
    } elsif ($roll < 0.89) {
        op_free_later(1);
    } elsif ($roll < 0.92) {
        op_free_kept(1);
    } elsif ($roll < 0.95) {
        op_drop_kept();
    } elsif ($in_callback < 3) {
        chance(0.5) ? op_dispatch_live(1) : op_dispatch_stale();
    }
    return;
}

# ---------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------

$LOOP = ModelLoop->new;
$LOOP->register;
$LOOP->register;          # the same object again: a no-op
ok(!eval { ModelLoop->new->register; 1 } && $@ =~ /already registered/,
   'the loop is registered once; another one is refused');

$SIG{__WARN__} = sub { push @warnings, $_[0] };
$Sys::Virt::Event::DIED = sub { push @reports, ["$_[0]", "$_[1]"] };

my @OPS = (
    [add_handle    => 10, sub { op_add('handle') }],
    [add_timer     => 8,  sub { op_add('timer') }],
    [update_handle => 5,  sub { op_update('handle') }],
    [update_timer  => 4,  sub { op_update('timer') }],
    [update_dead   => 2,  sub { op_update_dead(pick(qw(handle timer))) }],
    [remove        => 12, sub { op_remove(pick(qw(handle timer))) }],
    [dispatch_live => 16, sub { op_dispatch_live() }],
    [dispatch_kept => 8,  sub { op_dispatch_stale() }],
    [iterate       => 1,  sub { op_iterate() }],
    [free_later    => 6,  sub { op_free_later() }],
    [free_kept     => 5,  sub { op_free_kept() }],
    [drop_kept     => 5,  sub { op_drop_kept() }],
    [mixed         => 1,  sub { op_mixed() }],
    [run_pending   => 1,  sub { op_run_pending() }],
);
my $total_weight = 0;
$total_weight += $_->[1] for @OPS;

sub pick_op {
    my $live = keys(%{$live{handle}}) + keys(%{$live{timer}});
    # keep between a few and about seventy registrations alive, so that
    # the id maps grow, shrink and reuse their slots
    my $target = 4 + 66 * abs(sin($step / 1500));
    for (1 .. 10) {
        my $x = rand($total_weight);
        for my $op (@OPS) {
            next if ($x -= $op->[1]) >= 0;
            last if $op->[0] =~ /^add/ && $live > $target && chance(0.6);
            return $op;
        }
    }
    return $OPS[0];
}

my %done;
my $failure;
eval {
    for ($step = 1; $step <= $OPS; $step++) {
        my $op = pick_op();
        # false when not applicable now (nothing to remove, say)
        $op->[2]->() or next;
        $done{$op->[0]}++;
        check_step($step % 32 == 0);
    }
    # wind down: remove everything, free what the loop kept, drop the rest
    $step = 'end';
    note_op('wind down');
    check_step(1);
    op_remove(undef, 0, $_) for live_gids();
    check_step(1);
    op_free_later() while @{$LOOP->{later}};
    op_drop_kept() while @graveyard;
    op_run_pending();
    check_step(1);
    1;
} or do {
    my $err = $@;
    $failure = defined $first_failure ? $first_failure
             : ref $err eq 'HASH' ? $err->{model_failure} : "died: $err";
};

ok(!defined $failure, "$OPS operations matched the model")
    or diag(join "\n",
            "step $step of $OPS: $failure",
            'latest operations:', @history,
            "replay: SVE_MODEL_SEED=$SEED SVE_MODEL_OPS=$OPS prove -b t/70-model.t");
note("seed $SEED; operations: "
     . join(', ', map { "$_ $done{$_}" } sort keys %done));

SKIP: {
    skip 'the run stopped early', 4 if defined $failure;
    ok($LOOP->idle, 'nothing is left registered in the loop');
    my @twice = grep { ($destroyed{$_} || 0) != 1 } sort { $a <=> $b } keys %reg;
    is_deeply(\@twice, [], 'every coderef was released exactly once')
        or diag(explain({ map { $_ => $destroyed{$_} || 0 } @twice[0 .. ($#twice < 9 ? $#twice : 9)] }));
    is(Sys::Virt::Event::_pending_frees(), 0, 'no free is left pending');
    is_deeply(\@warnings, [], 'no warnings');
}
diag("seed $SEED (set SVE_MODEL_SEED=$SEED to replay)") unless Test::More->builder->is_passing;

done_testing;

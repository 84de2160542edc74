use strict;
use warnings;

# Domain lifecycle events from libvirt's test driver (test:///default),
# delivered through a Perl event loop (TestLoop): libvirt queues the event,
# arms its timer through our add/update_timeout, the loop dispatches the
# timer, and Sys::Virt calls the domain event callback.  Deregistration
# stops them, and once the connection is gone everything libvirt added to
# the loop has been removed and freed.

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Lifecycle qw(lifecycle_steps event_recorder);
use TestUtil qw(have_sys_virt);

BEGIN {
    plan skip_all => 'Sys::Virt is not installed' unless have_sys_virt();
}

use Sys::Virt;
use Sys::Virt::Event qw(:constants);
use TestLoop;

my $URI = 'test:///default';
my $DOM = 'test';

# TestLoop, plus a log of every call libvirt made with the ids involved,
# and of the loop's requests to free.
{
    package LoggingLoop;
    our @ISA = ('TestLoop');

    sub add_handle {
        my ($self, $fd, $events) = @_;
        my $watch = $self->SUPER::add_handle(@_[1 .. $#_]);
        push @{$self->{log}}, [add_handle => $watch, $events];
        return $watch;
    }

    sub update_handle {
        my ($self, $watch, $events) = @_;
        push @{$self->{log}}, [update_handle => $watch, $events];
        return $self->SUPER::update_handle($watch, $events);
    }

    sub remove_handle {
        my ($self, $watch) = @_;
        push @{$self->{log}}, [remove_handle => $watch];
        return $self->SUPER::remove_handle($watch);
    }

    sub add_timeout {
        my ($self, $ms) = @_;
        my $timer = $self->SUPER::add_timeout(@_[1 .. $#_]);
        push @{$self->{log}}, [add_timeout => $timer, $ms];
        return $timer;
    }

    sub update_timeout {
        my ($self, $timer, $ms) = @_;
        push @{$self->{log}}, [update_timeout => $timer, $ms];
        return $self->SUPER::update_timeout($timer, $ms);
    }

    sub remove_timeout {
        my ($self, $timer) = @_;
        push @{$self->{log}}, [remove_timeout => $timer];
        return $self->SUPER::remove_timeout($timer);
    }

    sub _free_callback_opaque {
        my ($self, @args) = @_;
        push @{$self->{frees}}, 1;
        return $self->SUPER::_free_callback_opaque(@args);
    }
}

# Checks that the log of calls is one libvirt could sanely have made:
# ids are positive and unique among live entries, updates and removes name
# live entries, masks and intervals are valid, and (when $all_removed)
# every add was removed exactly once.
sub log_problems {
    my ($log, $all_removed) = @_;
    my @problems;
    my %live = (handle => {}, timeout => {});
    my %seen = (handle => {}, timeout => {});
    for my $call (@$log) {
        my ($method, $id, $arg) = @$call;
        my ($op, $kind) = $method =~ /^(add|update|remove)_(handle|timeout)\z/
            or do { push @problems, "unknown call $method"; next };
        my $what = "$method($id" . (defined $arg ? ", $arg" : '') . ')';
        if ($op eq 'add') {
            push @problems, "$what: id not positive"
                unless defined $id && $id =~ /^\d+\z/ && $id > 0;
            push @problems, "$what: id already live" if $live{$kind}{$id};
            push @problems, "$what: id reused" if $seen{$kind}{$id}++;
            $live{$kind}{$id} = 1;
        } elsif ($op eq 'update') {
            push @problems, "$what: not a live $kind" unless $live{$kind}{$id};
        } else {
            push @problems, "$what: not a live $kind"
                unless delete $live{$kind}{$id};
        }
        if ($op ne 'remove') {
            if ($kind eq 'handle') {
                push @problems, "$what: bad mask"
                    if $arg & ~(HANDLE_READABLE | HANDLE_WRITABLE
                                | HANDLE_ERROR | HANDLE_HANGUP);
            } else {
                push @problems, "$what: bad interval" if $arg < -1;
            }
        }
    }
    if ($all_removed) {
        for my $kind (sort keys %live) {
            push @problems, "$kind $_ never removed"
                for sort { $a <=> $b } keys %{$live{$kind}};
        }
    }
    return @problems;
}

sub count_ops {
    my ($log, $re) = @_;
    return scalar grep { $_->[0] =~ $re } @$log;
}

my $loop = LoggingLoop->new;
$loop->{log} = [];
$loop->{frees} = [];
$loop->register;

my $conn = Sys::Virt->new(uri => $URI);
isa_ok($conn, 'Sys::Virt');
my $dom = $conn->get_domain_by_name($DOM);
is($dom->get_name, $DOM, "the test driver has domain '$DOM'");
ok($dom->is_active, 'it is running to begin with');

my @events;

sub recorder { return event_recorder(\@events, @_) }

my @LIFECYCLE = lifecycle_steps($dom);

# Do each lifecycle action and check the one event each produces.
sub check_lifecycle {
    my ($api) = @_;
    Lifecycle::check_lifecycle(api => $api, steps => \@LIFECYCLE, events => \@events,
                               run_until => sub { $loop->run_until(@_) }, through => 'the loop',
                               uri => $URI, domain => $DOM);
}

# After a deregistration: actions produce nothing, within a bounded wait.
sub check_silence {
    my ($api) = @_;
    @events = ();
    $dom->destroy;
    $dom->create;
    ok(!$loop->run_until(sub { @events }, 1),
       "$api: after deregistration, destroy and create deliver nothing");
    is(scalar @events, 0, "$api: no event recorded");
}

# Entries the loop holds now, kept to dispatch after libvirt removed them.
my @saved;
sub save_entries {
    push @saved, map { { %$_ } } values %{$loop->{handles}},
        values %{$loop->{timeouts}};
}

# -- domain_event_register_any ------------------------------------------
my $id = $conn->domain_event_register_any(undef,
    Sys::Virt::Domain::EVENT_ID_LIFECYCLE, recorder('any'));
ok(defined $id && $id >= 0, 'domain_event_register_any returns a callback id');
ok(count_ops($loop->{log}, qr/^add_/) >= 1,
   'registering for events made libvirt add to the Perl loop');
is_deeply([log_problems($loop->{log}, 0)], [], 'the calls so far are sane');

check_lifecycle('any');
ok(count_ops($loop->{log}, qr/^update_timeout/) >= 1,
   'libvirt armed its event timer through update_timeout');
save_entries();

$conn->domain_event_deregister_any($id);
check_silence('any');

# -- the old domain_event_register ----------------------------------------
$conn->domain_event_register(recorder('old'));
check_lifecycle('old');
save_entries();
$conn->domain_event_deregister;
check_silence('old');

# -- both at once; deregistering one leaves the other ---------------------
$id = $conn->domain_event_register_any(undef,
    Sys::Virt::Domain::EVENT_ID_LIFECYCLE, recorder('any'));
$conn->domain_event_register(recorder('old'));
@events = ();
$dom->destroy;
ok($loop->run_until(sub { @events >= 2 }, 5), 'both registrations get the event');
is_deeply([sort map { $_->{api} } @events], [qw(any old)],
          'one event for each registration');
save_entries();
$conn->domain_event_deregister_any($id);
@events = ();
$dom->create;
ok($loop->run_until(sub { @events }, 5), 'the remaining registration still gets events');
$loop->run_until(sub { @events > 1 }, 0.5);
is_deeply([map { [$_->{api}, $_->{event}] } @events],
          [[old => Sys::Virt::Domain::EVENT_STARTED]],
          'only the remaining registration is called');
$conn->domain_event_deregister;
check_silence('both');

ok($loop->idle, 'with no event callbacks left, libvirt removed all it added');

# -- dropping the connection ----------------------------------------------
undef $dom;
undef $conn;
$loop->run_once(20) for 1 .. 3;

ok($loop->idle, 'after the connection is dropped the loop is idle');
my $log = $loop->{log};
is_deeply([log_problems($log, 1)], [],
          'every add was removed exactly once; no call named a dead id');
my $removed = count_ops($log, qr/^remove_/);
ok($removed >= 1, "libvirt removed what it added ($removed entries)");
is(scalar @{$loop->{frees}}, $removed,
   'the loop asked for the free of each removed entry once');
is(scalar @{$loop->{calls}}, scalar @$log,
   "TestLoop's own record has the same number of calls");

ok(scalar @saved, 'entries were saved while events were registered');
my $calls_before = @$log;
@events = ();
my $ok = eval {
    for my $e (@saved) {
        if (exists $e->{watch}) {
            $loop->_run_handle_callback($e->{watch}, $e->{fd}, HANDLE_READABLE,
                                        $e->{cb}, $e->{opaque});
        } else {
            $loop->_run_timeout_callback($e->{timer}, $e->{cb}, $e->{opaque});
        }
    }
    1;
};
ok($ok, 'dispatching removed entries later does not croak') or diag $@;
$ok = eval {
    Sys::Virt::Event::_free_callback_opaque($loop, $_->{ff}, $_->{opaque}) for @saved;
    1;
};
ok($ok, 'a second free of removed entries does not croak') or diag $@;
is(scalar @$log, $calls_before, 'the stale dispatches made libvirt call nothing');
is(scalar @events, 0, 'and delivered no event');
ok($loop->idle, 'the loop is still idle');

# -- the free path end to end: a public timer's coderef is released -------
{
    package Guard;
    my $destroyed = 0;
    sub new { return bless {}, shift }
    sub DESTROY { $destroyed++ }
    sub destroyed { return $destroyed }
}

my $fired = 0;
my $timer = do {
    my $guard = Guard->new;
    Sys::Virt::Event::add_timeout(10, sub { $guard->{calls}++; $fired++ });
};
ok($loop->run_until(sub { $fired }, 5), 'a public timer fires through the loop');
is(Guard::destroyed(), 0, 'its coderef is held while the timer is live');
Sys::Virt::Event::remove_timeout($timer);
$loop->run_once(0) for 1 .. 2;
is(Guard::destroyed(), 1, 'removing it frees the coderef once');
ok($loop->idle, 'the loop is idle at the end');
is_deeply([log_problems($loop->{log}, 1)], [], 'the whole log is sane');

done_testing;

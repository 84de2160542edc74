use strict;
use warnings;

# The free function of a watch or timer runs exactly once, after libvirt
# removed it, and never inside a libvirt call; stale handles are skipped.

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Sys::Virt::Event qw(:constants);
use TestLoop;

{
    package Guard;
    my $destroyed = 0;
    sub new { return bless {}, shift }
    sub DESTROY { $destroyed++ }
    sub destroyed { return $destroyed }
}

# A loop that notes, inside remove_*, whether its free already ran.
{
    package ProbeLoop;
    our @ISA = ('TestLoop');
    sub remove_timeout {
        my ($self, $timer) = @_;
        my $t = $self->{timeouts}{$timer};
        $self->{saved} = $t;
        my $before = Guard::destroyed();
        my $ret = $self->SUPER::remove_timeout($timer);   # frees inside
        $self->{freed_inside_remove} = Guard::destroyed() - $before;
        $self->{pending_inside_remove} = Sys::Virt::Event::_pending_frees();
        return $ret;
    }
}

sub guarded_timer {
    my ($ms, $fired) = @_;
    my $guard = Guard->new;
    return Sys::Virt::Event::add_timeout($ms, sub { $$fired++ if $fired; $guard });
}

my $loop = ProbeLoop->new;
$loop->register;

# -- deferred out of remove, then exactly once ------------------------------
my $fired = 0;
my $before = Guard::destroyed();
my $t = guarded_timer(0, \$fired);
$loop->run_until(sub { $fired }, 2);
Sys::Virt::Event::remove_timeout($t);
is($loop->{freed_inside_remove}, 0, 'the free did not run inside remove_timeout');
is($loop->{pending_inside_remove}, 1, 'it was queued instead');
is(Guard::destroyed(), $before + 1, 'and ran once remove_timeout returned to the top level');
is(Sys::Virt::Event::_pending_frees(), 0, 'the queue is empty again');

# -- stale handles after the free ------------------------------------------
my $saved = $loop->{saved};
$fired = 0;
$loop->_run_timeout_callback($saved->{timer}, $saved->{cb}, $saved->{opaque});
is($fired, 0, 'dispatching a removed, freed timer is a silent no-op');
$loop->_free_callback_opaque($saved->{ff}, $saved->{opaque});
is(Guard::destroyed(), $before + 1, 'a second free is a no-op');
is(Sys::Virt::Event::_pending_frees(), 0, '... and queues nothing');

# -- freeing a live timer is refused ---------------------------------------------
my $live = guarded_timer(-1);
my ($entry) = grep { $_->{timer} == $live } values %{$loop->{timeouts}};
ok(!eval { $loop->_free_callback_opaque($entry->{ff}, $entry->{opaque}); 1 },
   'freeing a timer that is still registered croaks');
like($@, qr/^Sys::Virt::Event::_free_callback_opaque: timer \d+ is still registered/,
     '... naming the function and the problem');
Sys::Virt::Event::remove_timeout($live);

# -- a free requested at the top level runs at once ------------------------
{
    $loop->{free_in_remove} = 0;
    my $b = Guard::destroyed();
    my $t2 = guarded_timer(-1);
    Sys::Virt::Event::remove_timeout($t2);
    my $e = shift @{$loop->{later}};
    is(Guard::destroyed(), $b, 'not freed before the loop asks');
    $loop->_free_callback_opaque($e->{ff}, $e->{opaque});
    is(Guard::destroyed(), $b + 1, 'freed at once when asked from the top level');
    $loop->{free_in_remove} = 1;
}

# -- a loop that drops the handles without freeing --------------------------
{
    package ForgetfulLoop;
    our @ISA = ('ProbeLoop');
    sub remove_timeout {
        my ($self, $timer) = @_;
        delete $self->{timeouts}{$timer};   # the handles go, no free
        return 0;
    }
}
{
    bless $loop, 'ForgetfulLoop';
    my $b = Guard::destroyed();
    my $t3 = guarded_timer(-1);
    Sys::Virt::Event::remove_timeout($t3);
    is(Guard::destroyed(), $b + 1,
       'when the loop drops a removed timer\'s handles, the free still runs once');
    bless $loop, 'ProbeLoop';
}

# -- handles outlive their record's free and stay harmless ------------------
{
    my $b = Guard::destroyed();
    my $t4 = guarded_timer(-1);
    my ($e) = grep { $_->{timer} == $t4 } values %{$loop->{timeouts}};
    my %kept = %$e;
    Sys::Virt::Event::remove_timeout($t4);
    is(Guard::destroyed(), $b + 1, 'freed');
    $loop->_run_timeout_callback($kept{timer}, $kept{cb}, $kept{opaque}) for 1 .. 3;
    $loop->_free_callback_opaque($kept{ff}, $kept{opaque}) for 1 .. 3;
    is(Guard::destroyed(), $b + 1, 'kept handles dispatch and free as no-ops');
}

# -- a free requested inside a dispatch waits for the dispatch to return ----
{
    my $b = Guard::destroyed();
    my $t5 = guarded_timer(-1);
    $loop->{free_in_remove} = 0;
    Sys::Virt::Event::remove_timeout($t5);
    my $e = shift @{$loop->{later}};
    $loop->{free_in_remove} = 1;
    Sys::Virt::Event::_run_pending_frees();
    is(Guard::destroyed(), $b, 'nothing to drain before the loop frees');
    # From a dispatch the free is below a libvirt frame: it is queued and
    # drained when the dispatch returns.
    my $t6 = Sys::Virt::Event::add_timeout(0, sub {
        $loop->_free_callback_opaque($e->{ff}, $e->{opaque});
        $loop->{pending_in_dispatch} = Sys::Virt::Event::_pending_frees();
        $loop->{destroyed_in_dispatch} = Guard::destroyed();
    });
    $loop->run_until(sub { defined $loop->{pending_in_dispatch} }, 2);
    is($loop->{pending_in_dispatch}, 1, 'a free requested inside a dispatch is queued');
    is($loop->{destroyed_in_dispatch}, $b, '... not run there');
    is(Guard::destroyed(), $b + 1, '... and run when the dispatch returns');
    Sys::Virt::Event::remove_timeout($t6);
}

# -- libvirt's own free functions: closing a connection --------------------
SKIP: {
    skip 'Sys::Virt is not installed', 9 unless eval { require Sys::Virt; 1 };
    my $conn = Sys::Virt->new(uri => 'test:///default');
    my $id = $conn->domain_event_register_any(
        undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE(), sub { });
    ok(!$loop->idle, 'registering a domain event callback added a timer');
    my ($libvirt_timer) = keys %{ $loop->{timeouts} };
    $conn->domain_event_deregister_any($id);
    undef $conn;    # libvirt removes the timer inside virConnectClose
    ok(!$loop->{timeouts}{$libvirt_timer}, 'closing the connection removed it');
    is(Sys::Virt::Event::_pending_frees(), 1,
       'its free, requested inside remove_timeout, waits in the queue');
    # An upstream-style loop knows nothing of the queue: the module asks
    # it, through libvirt's hooks, for a 0 ms timer that drains it.
    is_deeply([map { $_->{interval} } values %{ $loop->{timeouts} }], [0],
              '... and the loop was asked for one 0 ms timer');
    $loop->run_once(0);
    is(Sys::Virt::Event::_pending_frees(), 0, 'one loop iteration runs the free');
    ok($loop->idle, '... and the 0 ms timer removed itself');

    # A loop may also run the queue itself, from its top level.
    $conn = Sys::Virt->new(uri => 'test:///default');
    $id = $conn->domain_event_register_any(
        undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE(), sub { });
    $conn->domain_event_deregister_any($id);
    undef $conn;
    is($loop->_pending_frees, 1, 'another close, another free queued');
    $loop->_run_pending_frees;
    is($loop->_pending_frees, 0, 'the loop can run it from its top level');
    $loop->run_once(0);
    ok($loop->idle, 'the 0 ms timer, found with nothing to drain, removed itself');
}

ok($loop->idle, 'nothing is left registered');
is(Sys::Virt::Event::_pending_frees(), 0, 'no free is left pending');
done_testing;

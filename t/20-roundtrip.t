use strict;
use warnings;

# Public add/update/remove through a Perl loop, without Sys::Virt:
# Sys::Virt::Event::add_handle -> libvirt -> TestLoop::add_handle, and
# TestLoop's dispatch -> _run_handle_callback -> libvirt's callback -> the
# coderef.

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

my $loop = TestLoop->new;
$loop->register;

pipe(my $r, my $w) or die "pipe: $!";
$w->autoflush(1);

# -- a watch fires with (watch, fd, events) -------------------------------
my @fired;
my $watch = Sys::Virt::Event::add_handle(fileno($r), HANDLE_READABLE,
                                         sub { push @fired, [@_] });
ok($watch > 0, 'add_handle returns a positive watch');
is_deeply($loop->{calls}[-1], [add_handle => fileno($r), HANDLE_READABLE],
          'the loop was asked to watch the fd for reading');

$loop->run_once(0);
is(scalar @fired, 0, 'nothing fires before data arrives');

syswrite($w, "x");
$loop->run_until(sub { @fired }, 2);
is_deeply($fired[0], [$watch, fileno($r), HANDLE_READABLE],
          'callback gets watch, fd and events');

# -- mask 0 disables, a mask re-enables ------------------------------------
Sys::Virt::Event::update_handle($watch, 0);
is_deeply($loop->{calls}[-1], [update_handle => $watch, 0], 'update reaches the loop');
@fired = ();
$loop->run_once(20) for 1 .. 3;
is(scalar @fired, 0, 'a watch with mask 0 does not fire, data pending or not');

Sys::Virt::Event::update_handle($watch, HANDLE_READABLE);
$loop->run_until(sub { @fired }, 2);
ok(scalar @fired, 'mask restored: the pending data fires again');
sysread($r, my $buf, 10);

# -- a filehandle is accepted, writable events --------------------------------
my @wfired;
my $wwatch = Sys::Virt::Event::add_handle($w, HANDLE_WRITABLE, sub { push @wfired, [@_] });
$loop->run_until(sub { @wfired }, 2);
is_deeply($wfired[0], [$wwatch, fileno($w), HANDLE_WRITABLE],
          'a filehandle is watched through its fileno');
Sys::Virt::Event::remove_handle($wwatch);

# -- hangup is reported even when the mask asked only for reading -----------
close $w;
@fired = ();
$loop->run_until(sub { @fired }, 2);
ok(@fired && ($fired[0][2] & HANDLE_HANGUP), 'HANGUP reported on a reading watch')
    or diag explain \@fired;

# -- remove releases the coderef exactly once --------------------------------
{
    # the guard lives only in the closure
    my $w2 = Sys::Virt::Event::add_handle($r, HANDLE_READABLE,
                                          do { my $guard = Guard->new; sub { $guard } });
    is(Guard::destroyed(), 0, 'the watch holds its coderef');
    Sys::Virt::Event::remove_handle($w2);
    is(Guard::destroyed(), 1,
       'freed once, after remove_handle returned (the loop freed inside remove)');
}
Sys::Virt::Event::remove_handle($watch);
close $r;

# -- the coderef is copied, not aliased -------------------------------------
{
    my @who;
    my $code = sub { push @who, 'first' };
    my $t = Sys::Virt::Event::add_timeout(0, $code);
    $code = sub { push @who, 'second' };
    $loop->run_until(sub { @who }, 2);
    is($who[0], 'first', 'reassigning the caller\'s variable changes nothing');
    Sys::Virt::Event::remove_timeout($t);
}

# -- timers: 0 fires every iteration, -1 disables, an interval waits --------
{
    my $n = 0;
    my $t = Sys::Virt::Event::add_timeout(0, sub { $n++ });
    $loop->run_once(10) for 1 .. 5;
    is($n, 5, 'a 0 ms timer fires on every iteration');

    Sys::Virt::Event::update_timeout($t, -1);
    $n = 0;
    $loop->run_once(10) for 1 .. 5;
    is($n, 0, 'interval -1 disables it');

    Sys::Virt::Event::update_timeout($t, 30);
    my $start = time;
    ok($loop->run_until(sub { $n }, 2), 'a 30 ms timer fires');

    my @args;
    Sys::Virt::Event::update_timeout($t, 0);
    my $t2 = Sys::Virt::Event::add_timeout(0, sub { @args = @_ });
    $loop->run_until(sub { @args }, 2);
    is_deeply(\@args, [$t2], 'a timer callback gets its timer id');
    Sys::Virt::Event::remove_timeout($_) for $t, $t2;
}

# -- a free requested later than remove also runs once ------------------------
{
    $loop->{free_in_remove} = 0;
    my $before = Guard::destroyed();
    my $t = Sys::Virt::Event::add_timeout(-1, do { my $guard = Guard->new; sub { $guard } });
    Sys::Virt::Event::remove_timeout($t);
    is(Guard::destroyed(), $before, 'not freed while the loop holds it');
    $loop->run_once(0);
    is(Guard::destroyed(), $before + 1, 'freed once when the loop frees it');
    $loop->run_once(0);
    is(Guard::destroyed(), $before + 1, 'and never again');
    $loop->{free_in_remove} = 1;
}

# -- callbacks may remove watches while the loop dispatches -----------------
{
    pipe(my $r1, my $w1) or die;
    syswrite($w1, "x");
    my (@order, $second);
    my $before = Guard::destroyed();
    my $first = Sys::Virt::Event::add_handle($r1, HANDLE_READABLE, sub {
        push @order, 'first';
        Sys::Virt::Event::remove_handle($_[0]);    # itself
        Sys::Virt::Event::remove_handle($second);  # a later one, same fd
    });
    $second = Sys::Virt::Event::add_handle($r1, HANDLE_READABLE, do {
        my $guard = Guard->new;
        sub { push @order, 'second'; $guard };
    });
    $loop->run_once(100);
    is_deeply(\@order, ['first'],
              'a watch removed earlier in the same iteration is skipped');
    is(Guard::destroyed(), $before + 1, 'the skipped watch\'s coderef was freed once');
}

# -- updates reach the loop only when they change something ---------------
{
    my $count = sub { my ($what) = @_; scalar grep { $_->[0] eq $what } @{$loop->{calls}} };
    my $t = Sys::Virt::Event::add_timeout(-1, sub { });
    my $before = $count->('update_timeout');
    Sys::Virt::Event::update_timeout($t, -1);
    is($count->('update_timeout'), $before, 'the same -1 again is not passed on');
    Sys::Virt::Event::update_timeout($t, 1000) for 1 .. 2;
    is($count->('update_timeout'), $before + 2,
       'a positive interval is passed on every time (it restarts the timer)');

    # inside a dispatch, the loop hears of updates once, after it
    my ($seen_inside, $calls_inside);
    my $flipper = Sys::Virt::Event::add_timeout(0, sub {
        Sys::Virt::Event::update_timeout($t, 0);
        Sys::Virt::Event::update_timeout($t, -1);
        Sys::Virt::Event::update_timeout($t, 0);
        $seen_inside = $loop->{timeouts}{$t}{interval};
        $calls_inside = $count->('update_timeout');
        Sys::Virt::Event::update_timeout($_[0], -1);   # itself: done
    });
    $before = $count->('update_timeout');
    $loop->run_until(sub { defined $seen_inside }, 2);
    is($calls_inside, $before, 'no update reaches the loop while it dispatches');
    is($seen_inside, 1000, '... so the loop still has the old interval there');
    is($count->('update_timeout'), $before + 2,
       'after the dispatch, one update per timer that changed');
    is($loop->{timeouts}{$t}{interval}, 0, '... carrying the last value asked for');
    Sys::Virt::Event::remove_timeout($_) for $t, $flipper;
}

ok($loop->idle, 'nothing is left registered');
done_testing;

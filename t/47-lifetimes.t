use strict;
use warnings;

# What a watch keeps alive, and for how long: the filehandle it watches,
# the coderef as it was when checked, the frees an upstream-style loop
# leaves queued, and watches inherited across fork.

use FindBin;
use lib "$FindBin::Bin/lib";

use POSIX ();
use Test::More;
use Sys::Virt::Event qw(:constants);
use TestLoop;
use TestUtil qw(in_child have_sys_virt);

{
    package Guard;
    sub new { my ($class, $code) = @_; return bless { code => $code }, $class }
    sub DESTROY { $_[0]{code}->() }
}

# A scalar whose FETCH returns the listed values in turn, counting reads.
{
    package Sequence;
    sub TIESCALAR { my ($class, @values) = @_; return bless { values => \@values, reads => 0 }, $class }
    sub FETCH { my ($self) = @_; $self->{reads}++; return shift @{ $self->{values} } // $self->{last} }
    sub STORE { }
}

sub fd_is_open { return -e "/proc/self/fd/$_[0]" }

$SIG{PIPE} = 'IGNORE';    # the old behaviour closed the watched pipe

my $loop = TestLoop->new;
$loop->register;

# -- add_handle keeps the filehandle it watches ------------------------------
{
    pipe(my $r, my $w) or die "pipe: $!";
    my $fd = fileno $r;
    my @calls;
    my $watch = Sys::Virt::Event::add_handle($r, HANDLE_READABLE,
                                             sub { push @calls, [@_] });
    undef $r;
    ok(fd_is_open($fd), 'once the program dropped the filehandle, the watch keeps its descriptor open');

    pipe(my $r2, my $w2) or die "pipe: $!";
    isnt(fileno $r2, $fd, 'a new pipe does not get the watched descriptor');
    syswrite $w2, 'x';
    $loop->run_once(20);
    is(scalar @calls, 0, 'data on the unrelated pipe does not fire the watch');
    syswrite $w, 'x';
    $loop->run_until(sub { @calls }, 2);
    is_deeply($calls[0], [$watch, $fd, HANDLE_READABLE], 'data on the watched pipe does');

    Sys::Virt::Event::remove_handle($watch);
    $loop->run_once(0);
    ok(!fd_is_open($fd), 'removing the watch released it: the descriptor is closed');

    # a glob value, copied into a variable that then changes
    pipe(my $r3, my $w3) or die "pipe: $!";
    my $fd3 = fileno $r3;
    my $glob = *$r3;
    my $watch3 = Sys::Virt::Event::add_handle($glob, HANDLE_READABLE, sub { });
    ($glob, $r3) = (5, undef);
    ok(fd_is_open($fd3), 'a glob value: the descriptor stays open when the variable changes');
    Sys::Virt::Event::remove_handle($watch3);
    $loop->run_once(0);
    ok(!fd_is_open($fd3), '... until the watch goes');

    # a descriptor number is watched as a number: nothing to keep
    my $n = Sys::Virt::Event::add_handle(fileno $r2, HANDLE_READABLE, sub { });
    Sys::Virt::Event::remove_handle($n);
    ok(fd_is_open(fileno $r2), 'a watch by number leaves the descriptor to the program');
}

# -- magical arguments are read once ------------------------------------------
{
    my $called = '';
    no warnings 'once';
    *main::by_name = sub { $called = 'a sub by name' };
    tie my $code, 'Sequence', sub { $called = 'the coderef' }, 'main::by_name';
    my $t = Sys::Virt::Event::add_timeout(0, $code);
    is((tied $code)->{reads}, 1, 'a tied coderef is read once');
    $loop->run_until(sub { $called }, 2);
    is($called, 'the coderef', 'the value checked is the value called');
    Sys::Virt::Event::remove_timeout($t);

    tie my $bad, 'Sequence', 'some text', sub { };
    my $err = eval { Sys::Virt::Event::add_timeout(0, $bad); 1 } ? '' : $@;
    like($err, qr/^Sys::Virt::Event::add_timeout: \$coderef is not a CODE reference, but 'some text'/,
         'the error names the value that was refused');
    is((tied $bad)->{reads}, 1, '... read once');

    tie my $ms, 'Sequence', 'soon', 5;
    $err = eval { Sys::Virt::Event::add_timeout($ms, sub { }); 1 } ? '' : $@;
    like($err, qr/\$frequency must be an integer from -1 to \d+, not 'soon'/,
         'a tied integer: the error names the value read');
    is((tied $ms)->{reads}, 1, '... read once');

    pipe(my $r, my $w) or die "pipe: $!";
    tie my $fd, 'Sequence', fileno($r), 'not a number';
    my $watch = Sys::Virt::Event::add_handle($fd, HANDLE_READABLE, sub { });
    is((tied $fd)->{reads}, 1, 'a tied descriptor is read once');
    Sys::Virt::Event::remove_handle($watch);
}

# -- an upstream-style loop, freeing inside remove_*, with no dispatch -------
SKIP: {
    skip 'Sys::Virt is not installed', 3 unless have_sys_virt();
    require Sys::Virt;
    # Each cycle makes libvirt add and remove a timer: the free is queued
    # inside virConnectClose, with nothing else to dispatch.
    my $cycle = sub {
        my $conn = Sys::Virt->new(uri => 'test:///default');
        my $id = $conn->domain_event_register_any(
            undef, Sys::Virt::Domain::EVENT_ID_LIFECYCLE(), sub { });
        $conn->domain_event_deregister_any($id);
        undef $conn;
        $loop->run_once(0);
    };
    $cycle->() for 1 .. 10;
    my $pending = Sys::Virt::Event::_pending_frees();
    $cycle->() for 1 .. 200;
    is(Sys::Virt::Event::_pending_frees(), $pending,
       '200 more connect/close cycles leave no more frees pending');
    is($pending, 0, 'none at all: each was run by the loop\'s next iteration');
    ok($loop->idle, 'and the 0 ms timers that drained them are gone');
}

# -- a destructor run by the frees removes the very watch being removed ------
{
    my $b_timer;
    my $a_timer = Sys::Virt::Event::add_timeout(-1, do {
        my $guard = Guard->new(sub { Sys::Virt::Event::remove_timeout($b_timer) });
        sub { $guard };
    });
    $b_timer = Sys::Virt::Event::add_timeout(-1, sub { });
    # The loop drops timer A's handles without freeing it, at the top
    # level: its free is queued, to run before the next public call.
    $loop->{free_in_remove} = 0;
    Sys::Virt::Event::remove_timeout($a_timer);
    $loop->{free_in_remove} = 1;
    @{ $loop->{later} } = ();
    is(Sys::Virt::Event::_pending_frees(), 1, 'timer A\'s free is queued');
    my $err = eval { Sys::Virt::Event::remove_timeout($b_timer); 1 } ? '' : $@;
    is($err, '', 'removing timer B, which A\'s destructor removes first, does not croak');
    ok(!$loop->{timeouts}{$b_timer}, 'timer B is gone');
    is(Sys::Virt::Event::_pending_frees(), 0, 'nothing is left queued');
}

# -- fork: what the parent registered stays silent in the child --------------
{
    pipe(my $r, my $w) or die "pipe: $!";
    my %fired;
    my $watch = Sys::Virt::Event::add_handle($r, HANDLE_READABLE, sub {
        $fired{watch}++;
        sysread $r, my $buf, 64;
    });
    my $timer = Sys::Virt::Event::add_timeout(1, sub { $fired{timer}++ });
    syswrite $w, 'x';

    my $child = in_child(sub {
        my $mine = 0;
        my $own = Sys::Virt::Event::add_timeout(1, sub { $mine++ });
        my $iterations = 0;
        my $deadline = time + 1;
        while (time < $deadline && $iterations < 50) {
            $loop->run_once(5);
            $iterations++;
        }
        Sys::Virt::Event::remove_timeout($own);
        my @live = grep { $loop->{handles}{$_}{events} } keys %{ $loop->{handles} };
        print 'parent_watch=', $fired{watch} // 0, "\n";
        print 'parent_timer=', $fired{timer} // 0, "\n";
        print "own_timer=$mine\n";
        print 'polled_watches=', scalar @live, "\n";
        print 'parent_timer_interval=', $loop->{timeouts}{$timer}{interval}, "\n";
    }, timeout => 60);
    my %out = map { /^(\w+)=(.*)\z/ ? ($1, $2) : () } split /\n/, $child->{output};
    is($child->{exit}, 0, 'the child ran its loop') or diag($child->{output});
    is($out{parent_watch}, 0, 'in the child, the parent\'s watch never fired');
    is($out{parent_timer}, 0, '... nor the parent\'s timer');
    ok($out{own_timer} > 0, '... while a timer the child added did');
    is($out{polled_watches}, 0, '... and the loop was told to stop watching the parent\'s descriptor');
    is($out{parent_timer_interval}, -1, '... and to disable the parent\'s timer');

    $loop->run_until(sub { $fired{watch} && $fired{timer} }, 2);
    ok($fired{watch}, 'in the parent, the watch still fires');
    ok($fired{timer}, '... and the timer');
    Sys::Virt::Event::remove_handle($watch);
    Sys::Virt::Event::remove_timeout($timer);
    $loop->run_once(0);
}

# libvirt's default loop cannot be told which watches are the parent's
SKIP: {
    my $r = in_child(sub {
        # a fresh process: the default loop instead of the Perl loop
        my $out = qx{$^X -Mblib -MSys::Virt::Event -e '
            Sys::Virt::Event::register_default();
            my \$fired = 0;
            my \$t = Sys::Virt::Event::add_timeout(1, sub { \$fired++ });
            my \$pid = fork // die;
            if (!\$pid) {
                my \$ok = eval { Sys::Virt::Event::run_default(); 1 };
                print "child: ", (\$ok ? "ran" : \$@);
                POSIX::_exit(0);
            }
            waitpid \$pid, 0;
            Sys::Virt::Event::run_default() until \$fired;
            print "parent: fired\n";
        ' 2>&1};
        print $out;
    }, timeout => 60);
    like($r->{output}, qr/^child: Sys::Virt::Event::run_default: this process was forked after libvirt's default event loop was registered/m,
         'run_default croaks in a forked child');
    like($r->{output}, qr/^parent: fired$/m, 'the parent\'s loop goes on');
}

# A watch on a descriptor closed underneath it, with libvirt's default
# loop, as its POD says: never called, and the loop spins.
{
    my $r = in_child(sub {
        my $out = qx{$^X -Mblib -MPOSIX -MTime::HiRes=time -MSys::Virt::Event -e '
            Sys::Virt::Event::register_default();
            pipe(my \$r, my \$w) or die;
            my \$calls = 0;
            my \$watch = Sys::Virt::Event::add_handle(fileno \$r,
                Sys::Virt::Event::HANDLE_READABLE(), sub { \$calls++ });
            POSIX::close(fileno \$r);
            my \$t = Sys::Virt::Event::add_timeout(100, sub { });
            my (\$iterations, \$until) = (0, time + 1);
            while (time < \$until && \$iterations < 1000) {
                Sys::Virt::Event::run_default();
                \$iterations++;
            }
            print "calls=\$calls iterations=\$iterations\n";
        ' 2>&1};
        print $out;
    }, timeout => 60);
    my ($calls, $iterations) = $r->{output} =~ /calls=(\d+) iterations=(\d+)/;
    is($calls, 0, 'the default loop never calls a watch whose descriptor was closed')
        or diag($r->{output});
    # a 100 ms timer alone would allow about 10 iterations in a second
    cmp_ok($iterations // 0, '>', 100, '... and does not wait either: it spins');
}

ok($loop->idle, 'nothing is left registered');
is(Sys::Virt::Event::_pending_frees(), 0, 'no free is left pending');
done_testing;

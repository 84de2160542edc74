use strict;
use warnings;

# libvirt's own default event loop, driven from Perl with run_default():
# domain lifecycle events from test:///default, and the public
# add_handle/add_timeout going through it (they fire, update to 0/-1
# disables them, remove releases the coderef exactly once).

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Lifecycle qw(lifecycle_steps event_recorder);
use Time::HiRes ();
use TestUtil qw(have_sys_virt default_run_until);

BEGIN {
    plan skip_all => 'Sys::Virt is not installed' unless have_sys_virt();
}

use Sys::Virt;
use Sys::Virt::Event qw(:constants);

my $URI = 'test:///default';
my $DOM = 'test';

# run_default() sits in libvirt's poll(), where a Perl signal handler
# would not run: let SIGALRM end the process if something hangs.
$SIG{ALRM} = 'DEFAULT';
alarm 120;

{
    package Guard;
    my $destroyed = 0;
    sub new { return bless {}, shift }
    sub DESTROY { $destroyed++ }
    sub destroyed { return $destroyed }
}

Sys::Virt::Event::register_default();
pass('register_default');

# A repeating timer, so that every run_default() returns within ~50ms.
my $ticks = 0;
my $ticker = Sys::Virt::Event::add_timeout(50, sub { $ticks++ });
ok($ticker > 0, 'add_timeout returns a positive timer id');

sub run_until { return default_run_until(@_) }

# Iterate for a while, however many callbacks run meanwhile.
sub run_for {
    my ($seconds) = @_;
    my $deadline = Time::HiRes::time() + $seconds;
    Sys::Virt::Event::run_default() while Time::HiRes::time() < $deadline;
    return;
}

ok(run_until(sub { $ticks >= 3 }, 5), 'the repeating timer fires, run_default returns');

# -- domain lifecycle events ----------------------------------------------
my $conn = Sys::Virt->new(uri => $URI);
isa_ok($conn, 'Sys::Virt');
my $dom = $conn->get_domain_by_name($DOM);
ok($dom->is_active, "domain '$DOM' is running to begin with");

my @events;

sub recorder { return event_recorder(\@events, @_) }

my @LIFECYCLE = lifecycle_steps($dom);

# Do each lifecycle action and check the one event each produces.
sub check_lifecycle {
    my ($api) = @_;
    Lifecycle::check_lifecycle(api => $api, steps => \@LIFECYCLE, events => \@events,
                               run_until => \&run_until, through => 'the default loop',
                               uri => $URI, domain => $DOM);
}

sub check_silence {
    my ($api) = @_;
    @events = ();
    $dom->destroy;
    $dom->create;
    my $t0 = $ticks;
    ok(!run_until(sub { @events }, 1),
       "$api: after deregistration, destroy and create deliver nothing");
    ok($ticks > $t0, "$api: while the loop kept running");
}

my $id = $conn->domain_event_register_any(undef,
    Sys::Virt::Domain::EVENT_ID_LIFECYCLE, recorder('any'));
ok(defined $id && $id >= 0, 'domain_event_register_any returns a callback id');
check_lifecycle('any');
$conn->domain_event_deregister_any($id);
check_silence('any');

$conn->domain_event_register(recorder('old'));
check_lifecycle('old');
$conn->domain_event_deregister;
check_silence('old');

undef $dom;
undef $conn;
my $t0 = $ticks;
ok(run_until(sub { $ticks >= $t0 + 3 }, 5),
   'after the connection is dropped the loop runs on without hanging');

# -- public add_handle on a pipe ------------------------------------------
pipe(my $r, my $w) or die "pipe: $!";
$w->autoflush(1);

my @hfired;
my $hguards = Guard::destroyed();
my $watch = do {
    my $guard = Guard->new;
    Sys::Virt::Event::add_handle(fileno($r), HANDLE_READABLE,
                                 sub { $guard->{calls}++; push @hfired, [@_] });
};
ok($watch > 0, 'add_handle returns a positive watch id');

run_for(0.2);
is(scalar @hfired, 0, 'the watch does not fire before data arrives');

syswrite($w, 'x');
ok(run_until(sub { @hfired }, 5), 'the watch fires when data arrives');
is_deeply($hfired[0], [$watch, fileno($r), HANDLE_READABLE],
          'its callback gets the watch, the fd and HANDLE_READABLE');

Sys::Virt::Event::update_handle($watch, 0);
@hfired = ();
$t0 = $ticks;
run_for(0.3);
is(scalar @hfired, 0, 'mask 0 disables the watch, data pending or not');
ok($ticks > $t0, 'while the loop kept running');

Sys::Virt::Event::update_handle($watch, HANDLE_READABLE);
ok(run_until(sub { @hfired }, 5), 'restoring the mask enables it again');
sysread($r, my $buf, 16);

is(Guard::destroyed(), $hguards, 'the watch holds its coderef while live');
Sys::Virt::Event::remove_handle($watch);
@hfired = ();
syswrite($w, 'y');
run_for(0.3);
is(scalar @hfired, 0, 'a removed watch does not fire');
is(Guard::destroyed(), $hguards + 1,
   'removing the watch released its coderef once, within a few iterations');
ok(!eval { Sys::Virt::Event::update_handle($watch, HANDLE_READABLE); 1 },
   'update_handle of a removed watch croaks');
like($@, qr/update_handle/, 'naming the function');
sysread($r, $buf, 16);

# -- public add_timeout ---------------------------------------------------
my @tfired;
my $tguards = Guard::destroyed();
my $timer = do {
    my $guard = Guard->new;
    Sys::Virt::Event::add_timeout(10, sub { $guard->{calls}++; push @tfired, [@_] });
};
ok($timer > 0 && $timer != $ticker, 'add_timeout returns a new timer id');
ok(run_until(sub { @tfired >= 2 }, 5), 'the timer fires repeatedly');
is_deeply($tfired[0], [$timer], 'its callback gets the timer id');

Sys::Virt::Event::update_timeout($timer, -1);
@tfired = ();
$t0 = $ticks;
run_for(0.3);
is(scalar @tfired, 0, 'interval -1 disables the timer');
ok($ticks > $t0, 'while the loop kept running');

Sys::Virt::Event::update_timeout($timer, 0);
@tfired = ();
Sys::Virt::Event::run_default() for 1 .. 5;
is(scalar @tfired, 5, 'interval 0 fires on every loop iteration');

is(Guard::destroyed(), $tguards, 'the timer holds its coderef while live');
Sys::Virt::Event::remove_timeout($timer);
@tfired = ();
run_for(0.3);
is(scalar @tfired, 0, 'a removed timer does not fire');
is(Guard::destroyed(), $tguards + 1,
   'removing the timer released its coderef once, within a few iterations');
run_for(0.2);
is(Guard::destroyed(), $tguards + 1, 'and only once');
is(Guard::destroyed(), $hguards + 2,
   'each of the two coderefs was released exactly once');

# -- the ticker last ------------------------------------------------------
# (nothing is registered afterwards, so the loop is not run again: an
# iteration could wait for ever)
Sys::Virt::Event::remove_timeout($ticker);

alarm 0;
done_testing;

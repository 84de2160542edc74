use strict;
use warnings;

# bin/virt-events against private libvirt daemons, as a user tries it:
#  - beside virsh's event commands (event --all, net-event, pool-event,
#    nodedev-event) on the same daemon, while every event the test
#    driver emits is made, it reports every event virsh reports, with the
#    same names, and nothing else of those types;
#  - with --reconnect, the daemon killed and started again (as systemctl
#    restart does) loses no subscription: close, reconnect, and events
#    of every type flow again;
#  - with --uri A --uri B, two daemons' events come in one stream, each
#    line naming its daemon;
#  - --count reached while another daemon is stopped: the supervisor ends
#    the watch, whose cleanup blocks, a few seconds later, with status 0;
#  - a filter whose value is 0 (--network 0) is a filter like any other.
# Needs libvirtd; the comparison needs virsh (Debian: libvirt-clients).

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Temp ();
use JSON::PP ();
use POSIX ();
use Test::More;
use Time::HiRes ();
use TestUtil qw(have_sys_virt);

BEGIN {
    plan skip_all => 'Sys::Virt is not installed' unless have_sys_virt();
}

use DriverEvents;
use PrivateLibvirtd;
use Sys::Virt;

if (my $why = PrivateLibvirtd::unavailable()) {
    plan skip_all => $why;
}

# virt-events keeps its own time (--timeout): it does not keep an alarm
my @SCRIPT = ("$FindBin::Bin/../bin/virt-events", '--timeout', 60);
my $TMP = File::Temp::tempdir(CLEANUP => 1);
# the daemon runs as another user under root: it writes the saved image
chmod 0777, $TMP;
my @PERL = ($^X, map { "-I$_" } grep { !ref } @INC);
my $LIMIT = 60;     # seconds any watcher may live

$SIG{PIPE} = 'IGNORE';

# ---- watchers: processes whose standard output goes to a file -------------

my $started = 0;
my %running;        # pid => 1: killed at the end whatever happened
END { kill 'KILL', keys %running }

sub start_watcher {
    my (@command) = @_;
    $started++;
    my %w = (out => "$TMP/watch$started.out", err => "$TMP/watch$started.err",
             command => "@command");
    $w{pid} = fork // die "fork: $!";
    if ($w{pid} == 0) {
        open STDIN, '<', '/dev/null' or POSIX::_exit(98);
        open STDOUT, '>', $w{out} or POSIX::_exit(98);
        open STDERR, '>', $w{err} or POSIX::_exit(98);
        alarm $LIMIT;       # the last resort: nothing outlives the test
        exec @command or POSIX::_exit(99);
    }
    $running{$w{pid}} = 1;
    return \%w;
}

sub lines_of {
    my ($file) = @_;
    open my $fh, '<', $file or return ();
    return map { s/\n\z//r } <$fh>;
}

sub stop_watcher {
    my ($w) = @_;
    kill 'INT', $w->{pid};
    my $status = reaped($w, 5);
    if (!defined $status) {
        kill 'KILL', $w->{pid};
        waitpid($w->{pid}, 0);
        $status = $?;
        diag("$w->{command} did not stop on SIGINT within 5 s");
    }
    delete $running{$w->{pid}};
    return $status;
}

# The wait status of a watcher that exits within $seconds, else undef.
sub reaped {
    my ($w, $seconds) = @_;
    my $status;
    wait_for(sub { waitpid($w->{pid}, POSIX::WNOHANG()) == $w->{pid} && defined($status = $?) },
             $seconds) or return;
    delete $running{$w->{pid}};
    return $status;
}

# Waits (bounded) until $done->() is true; returns whether it became so.
sub wait_for {
    my ($done, $seconds) = @_;
    my $until = Time::HiRes::time() + $seconds;
    until ($done->()) {
        return 0 if Time::HiRes::time() > $until;
        Time::HiRes::sleep(0.05);
    }
    return 1;
}

my $json = JSON::PP->new;

sub records_of {
    my ($w) = @_;
    return map { $json->decode($_) } grep { /\A\{/ } lines_of($w->{out});
}

# ---- what virsh prints, as the fields virt-events gives --------------------

# "event NAME|object|words" keys, comparable between the two.
sub virsh_key {
    my ($line) = @_;
    return "lifecycle|$1|$2"           if $line =~ /\Aevent 'lifecycle' for domain '(.*)': (.*)\z/;
    return "metadata-change|$1|$2|$3"  if $line =~ /\Aevent 'metadata-change' for domain '(.*)': type (\S+), uri (.*)\z/;
    return "network-lifecycle|$1|$2"   if $line =~ /\Aevent 'lifecycle' for network (\S+): (\S+)\z/;
    return "pool-lifecycle|$1|$2"      if $line =~ /\Aevent 'lifecycle' for storage pool (\S+): (\S+)\z/;
    return "pool-refresh|$1"           if $line =~ /\Aevent 'refresh' for storage pool (\S+)\z/;
    return "nodedev-lifecycle|$1|$2"   if $line =~ /\Aevent 'lifecycle' for node device (\S+): (\S+)\z/;
    return "nodedev-update|$1"         if $line =~ /\Aevent 'update' for node device (\S+)\z/;
    return;
}

sub record_key {
    my ($r) = @_;
    my $e = $r->{event};
    return "lifecycle|$r->{name}|$r->{type} $r->{detail}" if $e eq 'lifecycle';
    return "metadata-change|$r->{name}|$r->{type}|" . ($r->{nsuri} // '<null>')
        if $e eq 'metadata-change';
    return "$e|$r->{name}|$r->{type}" if $e =~ /lifecycle\z/;
    return "$e|$r->{name}";
}

# The types each virsh command watches, as virt-events names them.
my @VIRSH = (
    [ [qw(event --all)],                       qr/\A(?:lifecycle|metadata-change)\|/ ],
    [ [qw(net-event --event lifecycle)],       qr/\Anetwork-lifecycle\|/ ],
    [ [qw(pool-event --event lifecycle)],      qr/\Apool-lifecycle\|/ ],
    [ [qw(pool-event --event refresh)],        qr/\Apool-refresh\|/ ],
    [ [qw(nodedev-event --event lifecycle)],   qr/\Anodedev-lifecycle\|/ ],
    [ [qw(nodedev-event --event update)],      qr/\Anodedev-update\|/ ],
);

# One event of each kind the watchers above see, on objects that say
# they are markers: made until every watcher has shown one, so that the
# events that count find everyone listening.  (The vHBA's name does not
# say it: the driver gives the next one the same name.  Events are
# counted from the line each output had once all were listening.)
my $markers = 0;

sub make_markers {
    my ($conn) = @_;
    $markers++;
    my $name = "sve-marker-$markers";
    $conn->get_domain_by_name('test')
        ->set_metadata(Sys::Virt::Domain::METADATA_TITLE(), $name, undef, undef, 0);
    $conn->define_network("<network><name>$name</name></network>")->undefine;
    my $pool = $conn->create_storage_pool("<pool type='dir'><name>$name</name>"
        . "<target><path>/nonexistent/$name</path></target></pool>");
    $pool->refresh;
    $pool->destroy;
    my $device = $conn->create_node_device(
        "<device><parent>scsi_host1</parent><capability type='scsi_host'>"
        . "<capability type='fc_host'><wwnn>20000000aaaa000$markers</wwnn>"
        . "<wwpn>10000000aaaa000$markers</wwpn></capability></capability></device>");
    $device->destroy;
    return;
}

sub is_marker_key {
    my ($key) = @_;
    my (undef, $name, $rest) = split /\|/, $key, 3;
    return $name =~ /\Asve-marker-/
        || ($key =~ /\Ametadata-change\|/ && $rest =~ /\Atitle\|/);
}

sub synchronise {
    my ($conn, $ready) = @_;
    my $until = Time::HiRes::time() + 20;
    while (Time::HiRes::time() < $until) {
        make_markers($conn);
        return 1 if wait_for($ready, 0.5);
    }
    return 0;
}

# ---- beside virsh ---------------------------------------------------------

SKIP: {
    my ($virsh) = grep { -x } map { "$_/virsh" } split /:/, $ENV{PATH} // '';
    skip 'virsh is not installed (Debian: apt-get install libvirt-clients)', 4
        unless $virsh;

    my $daemon = PrivateLibvirtd->start;
    my $uri = $daemon->uri;
    my @virsh = map { start_watcher($virsh, '-c', $uri, @{$_->[0]}, '--loop') } @VIRSH;
    my $ours = start_watcher(@PERL, @SCRIPT, '--json', '--uri', $uri);
    my $conn = Sys::Virt->new(uri => $uri);

    # the update watcher never sees anything: the test driver has no such event
    my @synced = @virsh[0 .. 4];
    ok(synchronise($conn, sub {
           !grep({ !grep { defined virsh_key($_) } lines_of($_->{out}) } @synced)
           && records_of($ours) >= 6 }),
       'virsh and virt-events are watching the daemon')
        or diag(join "\n", map { "$_->{command}: " . join(' / ', lines_of($_->{err})) } @virsh, $ours);
    Time::HiRes::sleep(0.5);    # the last markers' events, everywhere
    my %from = map { $_->{out} => scalar(() = lines_of($_->{out})) } @virsh, $ours;
    my $new_lines = sub {
        my ($w) = @_;
        my @lines = lines_of($w->{out});
        return @lines[$from{$w->{out}} .. $#lines];
    };

    for my $step (DriverEvents::steps($TMP)) {
        $step->[1]->($conn);
    }
    my $expected = () = map { @$_[2 .. $#$_] } DriverEvents::steps($TMP);
    my $ours_now = sub {
        grep { !is_marker_key($_) } map { record_key($json->decode($_)) }
        grep { defined && /\A\{/ } $new_lines->($ours)
    };
    wait_for(sub { $ours_now->() >= $expected }, 10);
    Time::HiRes::sleep(0.5);    # anything extra, or late on virsh's side
    stop_watcher($_) for @virsh, $ours;

    my @ours = $ours_now->();
    my (@theirs, @mine);
    for my $i (0 .. $#VIRSH) {
        my $types = $VIRSH[$i][1];
        push @theirs, grep { $_ =~ $types && !is_marker_key($_) }
                      map { virsh_key($_) // () } grep { defined } $new_lines->($virsh[$i]);
        push @mine, grep { $_ =~ $types } @ours;
    }
    is(scalar @theirs, $expected, "virsh reports the $expected events the test driver made");
    is_deeply([sort @mine], [sort @theirs],
              'virt-events --json reports every event virsh reports, with the same names, and no other')
        or diag("virsh:\n  " . join("\n  ", @theirs) . "\nvirt-events:\n  " . join("\n  ", @mine));
    is(scalar(grep { !/\A(?:lifecycle|metadata-change|network-lifecycle|pool-lifecycle|pool-refresh|nodedev-lifecycle|nodedev-update)\|/ } @ours),
       0, 'and no event of a type virsh was not watching');
    undef $conn;
    $daemon->stop;
}

# ---- --reconnect across a restart ------------------------------------------

{
    my $daemon = PrivateLibvirtd->start;
    my $uri = $daemon->uri;
    my $w = start_watcher(@PERL, @SCRIPT, '--json', '--reconnect', '--uri', $uri);
    my $conn = Sys::Virt->new(uri => $uri);
    ok(synchronise($conn, sub { records_of($w) >= 6 }), '--reconnect: watching');
    undef $conn;

    $daemon->signal('KILL');
    $daemon->wait_gone(5);
    $daemon->restart;
    my $back = wait_for(sub { grep { $_->{event} eq 'reconnect' } records_of($w) }, 15);
    ok($back, '--reconnect: after the daemon was killed and started again, it reconnected');
    my @connection = map { $_->{event} } grep { $_->{kind} eq 'connection' } records_of($w);
    is("@connection", 'close reconnect', '--reconnect: one close, then one reconnect');

    $conn = Sys::Virt->new(uri => $uri);
    my $before = records_of($w);
    $_->[1]->($conn) for DriverEvents::steps($TMP);
    my @want = map { @$_[2 .. $#$_] } DriverEvents::steps($TMP);
    wait_for(sub { records_of($w) >= $before + @want }, 10);
    Time::HiRes::sleep(0.3);
    my @after = (records_of($w))[$before .. records_of($w) - 1];
    is(scalar @after, scalar @want, '--reconnect: every event after the restart, each once')
        or diag(join "\n", map { record_key($_) } @after);
    my @wrong = map { DriverEvents::mismatches($after[$_] // {}, $want[$_]) } 0 .. $#want;
    is_deeply(\@wrong, [], '--reconnect: with the right fields, of every type the driver emits');
    is(stop_watcher($w) >> 8, 130, '--reconnect: SIGINT ends it with status 130');
    undef $conn;
    $daemon->stop;
}

# ---- two daemons, one stream -----------------------------------------------

{
    my @daemons = map { PrivateLibvirtd->start } 1 .. 2;
    my @uris = map { $_->uri } @daemons;
    my $w = start_watcher(@PERL, @SCRIPT, '--event', 'lifecycle',
                          map { ('--uri', $_) } @uris);
    my @conns = map { Sys::Virt->new(uri => $_) } @uris;
    my $seen = sub { my ($i) = @_; grep { /\Q$uris[$i]\E event 'lifecycle'/ } lines_of($w->{out}) };
    my $until = Time::HiRes::time() + 20;
    # suspend and resume until each daemon's events show: both are watched
    until (($seen->(0) && $seen->(1)) || Time::HiRes::time() > $until) {
        for my $conn (@conns) {
            my $dom = $conn->get_domain_by_name('test');
            $dom->suspend;
            $dom->resume;
        }
        Time::HiRes::sleep(0.2);
    }
    ok($seen->(0) && $seen->(1), '--uri A --uri B: the events of both daemons, in one stream');
    my $before = lines_of($w->{out});
    $conns[1]->get_domain_by_name('test')->destroy;
    $conns[0]->get_domain_by_name('test')->destroy;
    wait_for(sub { lines_of($w->{out}) >= $before + 2 }, 10);
    my @last = (lines_of($w->{out}))[$before .. $before + 1];
    like($last[0] // '', qr/\A\S+ \Q$uris[1]\E event 'lifecycle' for domain 'test': Stopped Destroyed\z/,
         '--uri A --uri B: each line names the daemon it came from (B)');
    like($last[1] // '', qr/\A\S+ \Q$uris[0]\E event 'lifecycle' for domain 'test': Stopped Destroyed\z/,
         '--uri A --uri B: each line names the daemon it came from (A)');
    stop_watcher($w);
    undef @conns;
    $_->stop for @daemons;
}

# ---- --count reached while another daemon does not answer --------------------

{
    my @daemons = map { PrivateLibvirtd->start } 1 .. 2;
    my @uris = map { $_->uri } @daemons;
    my $w = start_watcher(@PERL, @SCRIPT, '--event', 'lifecycle', '--count', 1,
                          map { ('--uri', $_) } @uris);
    ok(wait_for(sub { grep { /watching/ } lines_of($w->{err}) }, 20), 'the watch is set up');
    ok($daemons[0]->signal('STOP'), 'the first daemon is stopped');
    Sys::Virt->new(uri => $uris[1])->get_domain_by_name('test')->suspend;
    # closing the connection to the stopped daemon blocks: the supervisor
    # ends the watch 5 s after it chose its status
    my $status = reaped($w, 30);
    ok(defined $status, '--count 1 with a stopped daemon: ends by itself');
    is($status, 0, '--count 1 with a stopped daemon: exits 0');
    like(join("\n", lines_of($w->{out})),
         qr/\A\S+ \Q$uris[1]\E event 'lifecycle' for domain 'test': Suspended Paused\z/,
         '--count 1 with a stopped daemon: the one event');
    like(join("\n", lines_of($w->{err})),
         qr/no answer from libvirt within 5 seconds: ending without cleanup\z/,
         '--count 1 with a stopped daemon: saying why it did not clean up');
    $daemons[0]->signal('CONT');
    stop_watcher($w) unless defined $status;
    $_->stop for @daemons;
}

# ---- a filter whose value is 0 -----------------------------------------------

{
    my $daemon = PrivateLibvirtd->start;
    my $w = start_watcher(@PERL, @SCRIPT, '--json', '--uri', $daemon->uri, '--network', '0');
    my $conn = Sys::Virt->new(uri => $daemon->uri);
    my $bounce = sub {
        my ($name, $uuid) = @_;
        $conn->define_network("<network><name>$name</name>"
                              . ($uuid ? "<uuid>$uuid</uuid>" : '') . '</network>')->undefine;
    };
    # define and undefine "0" until its events show: the watcher listens
    ok(wait_for(sub { $bounce->('0'); records_of($w) }, 20),
       '--network 0: the events of the network named 0 are printed');
    # another network's events, then the last of 0's, known by its UUID
    my $last = 'b0b0b0b0-0000-4000-8000-000000000000';
    $bounce->('sve-other');
    $bounce->('0', $last);
    ok(wait_for(sub { grep { $_->{uuid} eq $last && $_->{type} eq 'Undefined' } records_of($w) }, 10),
       '--network 0: the last events of 0 arrive');
    is(join(' ', sort grep { $_ ne '0' } map { $_->{name} } records_of($w)), '',
       '--network 0: those of that network only');
    stop_watcher($w);
    undef $conn;
    $daemon->stop;
}

done_testing;

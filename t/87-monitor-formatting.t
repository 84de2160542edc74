use strict;
use warnings;

# Sys::Virt::Event::Monitor's records and lines of text, for every event
# type, from arguments made by hand exactly as Sys::Virt 9.0.0 passes
# them to its callbacks: this is formatting only.  The test driver emits
# a few of these types (t/86-monitor.t sees those arrive end to end); the
# others need a real hypervisor, so here nothing is delivered, no
# connection is opened and no event loop runs.  Every test name says so.

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes ();
use TestUtil qw(have_sys_virt);

BEGIN {
    plan skip_all => 'Sys::Virt is not installed' unless have_sys_virt();
}

use Sys::Virt::Event::Monitor;
use DriverEvents ();

my $M = 'Sys::Virt::Event::Monitor';
my $F = 'formatting only';

# -- objects as Sys::Virt gives them: name and UUID, nothing else ----------

{
    package Stub;
    sub new { my ($class, %f) = @_; return bless {%f}, $class }
    sub get_name { return $_[0]{name} }
    sub get_uuid_string { return $_[0]{uuid} }
    package Stub::Domain;      our @ISA = ('Stub');
    package Stub::Network;     our @ISA = ('Stub');
    package Stub::StoragePool; our @ISA = ('Stub');
    # a node device has no UUID, a secret no name: the monitor must not
    # ask, whatever these would answer
    package Stub::NodeDevice;  our @ISA = ('Stub');
    package Stub::Secret;      our @ISA = ('Stub');
}

my $DOM_UUID = '4dea22b3-1d52-d8f3-2516-782e98ab3fa0';
my $SECRET_UUID = '0a81f5b2-8403-7b23-c8d6-21ccc2f80d6f';
my %OBJECT = (
    domain  => Stub::Domain->new(name => 'web1', uuid => $DOM_UUID),
    network => Stub::Network->new(name => 'default', uuid => 'c4c8ad1f-3b2a-4a3c-9d5e-1f2e3d4c5b6a'),
    pool    => Stub::StoragePool->new(name => 'images', uuid => '35bb2ad9-388a-cdfe-461a-b8907f6e53fe'),
    nodedev => Stub::NodeDevice->new(name => 'scsi_host7', uuid => 'not-asked'),
    secret  => Stub::Secret->new(name => 'not-asked', uuid => $SECRET_UUID),
);
my %IDENTITY = (
    domain  => { name => 'web1',       uuid => $DOM_UUID },
    network => { name => 'default',    uuid => 'c4c8ad1f-3b2a-4a3c-9d5e-1f2e3d4c5b6a' },
    pool    => { name => 'images',     uuid => '35bb2ad9-388a-cdfe-461a-b8907f6e53fe' },
    nodedev => { name => 'scsi_host7', uuid => undef },
    secret  => { name => undef,        uuid => $SECRET_UUID },
);
my $CONN = bless {}, 'Stub::Connection';    # the monitor ignores it

# -- event_names ---------------------------------------------------------

is(scalar @DriverEvents::DOMAIN_EVENTS, 27, "$F: 27 domain events in libvirt's id order");
is_deeply([$M->event_names], [@DriverEvents::DOMAIN_EVENTS, @DriverEvents::OTHER_EVENTS, qw(close reconnect)],
          "$F: event_names: the 27 domain events in libvirt's id order, the 7 others, close, reconnect");
is(scalar(my @n = $M->event_names), 36, "$F: event_names: 36 names");

# -- one record and one line per case --------------------------------------
#
# [event, kind, [arguments after the connection and the object],
#  {the event's own fields}, the line after "event 'NAME' for KIND 'OBJECT'"]

my $SUBJECT = [ { type => 'x509dname', name => 'CN=client one,O=Example' },
                { type => 'saslUsername', name => 'fred' } ];
my $TUNABLE = { 'cputune.vcpu_quota' => 1000, 'cputune.emulatorpin' => '0-3',
                'blkdeviotune.disk' => 'vda' };
my $JOB = { type => 2, time_elapsed => 1234, data_total => 1073741824,
            'disk_bytes_processed' => 0 };

my @CASES = (
    [ lifecycle => domain => [5, 1],
      { type => 'Stopped', type_code => 5, detail => 'Destroyed', detail_code => 1 },
      ': Stopped Destroyed' ],
    [ lifecycle => domain => [6, 1],
      { type => 'Shutdown', type_code => 6, detail => 'Finished after guest request', detail_code => 1 },
      ': Shutdown "Finished after guest request"' ],
    [ lifecycle => domain => [3, 2],
      { type => 'Suspended', type_code => 3, detail => 'I/O Error', detail_code => 2 },
      ': Suspended "I/O Error"' ],
    [ lifecycle => domain => [99, 0],
      { type => undef, type_code => 99, detail => undef, detail_code => 0 },
      ': 99 0', 'a type unknown to the module' ],
    [ lifecycle => domain => [2, 99],
      { type => 'Started', type_code => 2, detail => undef, detail_code => 99 },
      ': Started 99', 'a detail unknown to the module' ],
    [ reboot => domain => [], {}, '' ],
    [ 'rtc-change' => domain => [-3600], { utc_offset => -3600 }, ': utc_offset=-3600' ],
    [ watchdog => domain => [6], { action => 'inject-nmi', action_code => 6 }, ': action=inject-nmi' ],
    [ watchdog => domain => [99], { action => undef, action_code => 99 }, ': action=99',
      'an action unknown to the module' ],
    [ 'io-error' => domain => ['/var/lib/a.img', 'virtio-disk0', 1],
      { src_path => '/var/lib/a.img', dev_alias => 'virtio-disk0', action => 'pause', action_code => 1 },
      ': src_path=/var/lib/a.img dev_alias=virtio-disk0 action=pause' ],
    [ 'io-error' => domain => [undef, 'virtio-disk0', 2],
      { src_path => undef, dev_alias => 'virtio-disk0', action => 'report', action_code => 2 },
      ': src_path=- dev_alias=virtio-disk0 action=report', 'no source path' ],
    [ graphics => domain => [0, { family => 0, node => '127.0.0.1', service => '5900' },
                             { family => 1, node => '::1', service => '40000' }, 'vnc', $SUBJECT],
      { phase => 'connect', phase_code => 0,
        local => { family => 'IPv4', family_code => 0, node => '127.0.0.1', service => '5900' },
        remote => { family => 'IPv6', family_code => 1, node => '::1', service => '40000' },
        auth_scheme => 'vnc',
        subject => [ { type => 'x509dname', name => 'CN=client one,O=Example' },
                     { type => 'saslUsername', name => 'fred' } ] },
      ': phase=connect local.family=IPv4 local.node=127.0.0.1 local.service=5900'
      . ' remote.family=IPv6 remote.node=::1 remote.service=40000 auth_scheme=vnc'
      . ' subject.0.name="CN=client one,O=Example" subject.0.type=x509dname'
      . ' subject.1.name=fred subject.1.type=saslUsername' ],
    [ graphics => domain => [2, { family => 2, node => '/run/vnc.sock', service => '' },
                             { family => 99, node => '', service => '' }, 'none', []],
      { phase => 'disconnect', phase_code => 2,
        local => { family => 'unix', family_code => 2, node => '/run/vnc.sock', service => '' },
        remote => { family => undef, family_code => 99, node => '', service => '' },
        auth_scheme => 'none', subject => [] },
      ': phase=disconnect local.family=unix local.node=/run/vnc.sock local.service=""'
      . ' remote.family=99 remote.node="" remote.service="" auth_scheme=none',
      'a unix socket, a family unknown to the module, no subject' ],
    [ 'io-error-reason' => domain => ['/var/lib/a.img', 'ide0-0-0', 0, 'enospc'],
      { src_path => '/var/lib/a.img', dev_alias => 'ide0-0-0', action => 'none', action_code => 0,
        reason => 'enospc' },
      ': src_path=/var/lib/a.img dev_alias=ide0-0-0 action=none reason=enospc' ],
    [ 'control-error' => domain => [], {}, '' ],
    [ 'block-job' => domain => ['/var/lib/b.qcow2', 2, 3],
      { path => '/var/lib/b.qcow2', type => 'Block Copy', type_code => 2,
        status => 'ready', status_code => 3 },
      ': path=/var/lib/b.qcow2 type="Block Copy" status=ready' ],
    [ 'block-job' => domain => ['/var/lib/b.qcow2', 5, 1],
      { path => '/var/lib/b.qcow2', type => 'Backup', type_code => 5,
        status => 'failed', status_code => 1 },
      ': path=/var/lib/b.qcow2 type=Backup status=failed' ],
    [ 'disk-change' => domain => ['/iso/old.iso', undef, 'ide0-1-0', 1],
      { old_src_path => '/iso/old.iso', new_src_path => undef, dev_alias => 'ide0-1-0',
        reason => 'dropped', reason_code => 1 },
      ': old_src_path=/iso/old.iso new_src_path=- dev_alias=ide0-1-0 reason=dropped' ],
    [ 'tray-change' => domain => ['ide0-1-0', 0],
      { dev_alias => 'ide0-1-0', reason => 'opened', reason_code => 0 },
      ': dev_alias=ide0-1-0 reason=opened' ],
    [ 'pm-wakeup' => domain => [0], { reason => 0 }, ': reason=0' ],
    [ 'pm-suspend' => domain => [0], { reason => 0 }, ': reason=0' ],
    [ 'balloon-change' => domain => [1048576], { actual => 1048576 }, ': actual=1048576' ],
    [ 'pm-suspend-disk' => domain => [0], { reason => 0 }, ': reason=0' ],
    [ 'device-removed' => domain => ['virtio-disk1'], { dev_alias => 'virtio-disk1' },
      ': dev_alias=virtio-disk1' ],
    [ 'block-job-2' => domain => ['vda', 4, 0],
      { disk => 'vda', type => 'Active Block Commit', type_code => 4,
        status => 'completed', status_code => 0 },
      ': disk=vda type="Active Block Commit" status=completed' ],
    [ 'block-job-2' => domain => ['vdb', 99, 2],
      { disk => 'vdb', type => undef, type_code => 99, status => 'canceled', status_code => 2 },
      ': disk=vdb type=99 status=canceled', 'a job type unknown to the module' ],
    [ tunable => domain => [$TUNABLE],
      { params => { 'cputune.vcpu_quota' => 1000, 'cputune.emulatorpin' => '0-3',
                    'blkdeviotune.disk' => 'vda' } },
      ': params.blkdeviotune.disk=vda params.cputune.emulatorpin=0-3 params.cputune.vcpu_quota=1000' ],
    [ 'agent-lifecycle' => domain => [1, 2],
      { state => 'connected', state_code => 1, reason => 'channel event', reason_code => 2 },
      ': state=connected reason="channel event"' ],
    [ 'agent-lifecycle' => domain => [2, 1],
      { state => 'disconnected', state_code => 2, reason => 'domain started', reason_code => 1 },
      ': state=disconnected reason="domain started"' ],
    [ 'device-added' => domain => ['net1'], { dev_alias => 'net1' }, ': dev_alias=net1' ],
    [ 'migration-iteration' => domain => [3], { iteration => 3 }, ': iteration=3' ],
    [ 'job-completed' => domain => [$JOB],
      { params => { type => 2, time_elapsed => 1234, data_total => 1073741824,
                    disk_bytes_processed => 0 } },
      ': params.data_total=1073741824 params.disk_bytes_processed=0 params.time_elapsed=1234 params.type=2' ],
    [ 'device-removal-failed' => domain => ['hostdev0'], { dev_alias => 'hostdev0' },
      ': dev_alias=hostdev0' ],
    [ 'metadata-change' => domain => [2, 'http://example.org/ns/1'],
      { type => 'element', type_code => 2, nsuri => 'http://example.org/ns/1' },
      ': type=element nsuri=http://example.org/ns/1' ],
    [ 'metadata-change' => domain => [1, undef],
      { type => 'title', type_code => 1, nsuri => undef }, ': type=title nsuri=-' ],
    [ 'block-threshold' => domain => ['vda[1]', '/var/lib/c.img', 1073741824, 4096],
      { dev => 'vda[1]', path => '/var/lib/c.img', threshold => 1073741824, excess => 4096 },
      ': dev=vda[1] path=/var/lib/c.img threshold=1073741824 excess=4096' ],
    [ 'memory-failure' => domain => [1, 2, 3],
      { recipient => 'guest', recipient_code => 1, action => 'fatal', action_code => 2,
        flags => 3, action_required => 1, recursive => 1 },
      ': recipient=guest action=fatal flags=3 action_required=1 recursive=1',
      'both flag bits' ],
    [ 'memory-failure' => domain => [0, 3, 1],
      { recipient => 'hypervisor', recipient_code => 0, action => 'reset', action_code => 3,
        flags => 1, action_required => 1, recursive => 0 },
      ': recipient=hypervisor action=reset flags=1 action_required=1 recursive=0',
      'flag action-required' ],
    [ 'memory-failure' => domain => [99, 1, 2],
      { recipient => undef, recipient_code => 99, action => 'inject', action_code => 1,
        flags => 2, action_required => 0, recursive => 1 },
      ': recipient=99 action=inject flags=2 action_required=0 recursive=1',
      'flag recursive, a recipient unknown to the module' ],
    [ 'memory-failure' => domain => [0, 0, 0],
      { recipient => 'hypervisor', recipient_code => 0, action => 'ignore', action_code => 0,
        flags => 0, action_required => 0, recursive => 0 },
      ': recipient=hypervisor action=ignore flags=0 action_required=0 recursive=0', 'no flag' ],
    [ 'memory-device-size-change' => domain => ['dimm0', 524288],
      { alias => 'dimm0', size => 524288 }, ': alias=dimm0 size=524288' ],
    [ 'network-lifecycle' => network => [2, 0],
      { type => 'Started', type_code => 2, detail_code => 0 }, ': Started' ],
    [ 'network-lifecycle' => network => [99, 7],
      { type => undef, type_code => 99, detail_code => 7 }, ': 99',
      'a type unknown to the module' ],
    [ 'pool-lifecycle' => pool => [4, 0],
      { type => 'Created', type_code => 4, detail_code => 0 }, ': Created' ],
    [ 'pool-lifecycle' => pool => [5, 0],
      { type => 'Deleted', type_code => 5, detail_code => 0 }, ': Deleted' ],
    [ 'pool-refresh' => pool => [], {}, '' ],
    [ 'nodedev-lifecycle' => nodedev => [2, 0],
      { type => 'Defined', type_code => 2, detail_code => 0 }, ': Defined' ],
    [ 'nodedev-lifecycle' => nodedev => [3, 0],
      { type => 'Undefined', type_code => 3, detail_code => 0 }, ': Undefined' ],
    [ 'nodedev-update' => nodedev => [], {}, '' ],
    [ 'secret-lifecycle' => secret => [0, 0],
      { type => 'Defined', type_code => 0, detail_code => 0 }, ': Defined' ],
    [ 'secret-lifecycle' => secret => [1, 0],
      { type => 'Undefined', type_code => 1, detail_code => 0 }, ': Undefined' ],
    [ 'secret-value-changed' => secret => [], {}, '' ],
);

my %covered;
for my $case (@CASES) {
    my ($event, $kind, $args, $fields, $line, $what) = @$case;
    my $t = "$F: $event" . ($what ? " ($what)" : '') . (@$args ? ' (' . join(', ', map {
        !defined $_ ? 'undef' : ref $_ ? ref $_ : $_ } @$args) . ')' : '');
    my $before = Time::HiRes::time();
    my $record = $M->record($event, $CONN, $OBJECT{$kind}, @$args);
    my $after = Time::HiRes::time();
    my $time = delete $record->{time};
    ok(defined $time && $time >= $before && $time <= $after, "$t: time is when the record was made");
    is_deeply($record, { uri => undef, kind => $kind, event => $event, %{$IDENTITY{$kind}}, %$fields },
              "$t: every field of the record");
    $record->{time} = $time;
    my $object = $kind eq 'secret' ? $SECRET_UUID : $IDENTITY{$kind}{name};
    is($M->describe($record), "event '$event' for $kind '$object'$line", "$t: describe");
    $covered{$event}++;
}
my @uncovered = grep { !$covered{$_} } @DriverEvents::DOMAIN_EVENTS, @DriverEvents::OTHER_EVENTS;
ok(!@uncovered, "$F: every one of the 34 event types is checked") or diag("not checked: @uncovered");

# -- every lifecycle name, as virsh prints them -----------------------------

my @LIFECYCLE = (
    [ Defined     => 'Added', 'Updated', 'Renamed', 'Snapshot' ],
    [ Undefined   => 'Removed', 'Renamed' ],
    [ Started     => 'Booted', 'Migrated', 'Restored', 'Snapshot', 'Event wakeup' ],
    [ Suspended   => 'Paused', 'Migrated', 'I/O Error', 'Watchdog', 'Restored', 'Snapshot',
                     'API error', 'Post-copy', 'Post-copy Error' ],
    [ Resumed     => 'Unpaused', 'Migrated', 'Snapshot', 'Post-copy', 'Post-copy Error' ],
    [ Stopped     => 'Shutdown', 'Destroyed', 'Crashed', 'Migrated', 'Saved', 'Failed', 'Snapshot' ],
    [ Shutdown    => 'Finished', 'Finished after guest request', 'Finished after host request' ],
    [ PMSuspended => 'Memory', 'Disk' ],
    [ Crashed     => 'Panicked', 'Crashloaded' ],
);
{
    my @wrong;
    for my $type_code (0 .. $#LIFECYCLE) {
        my ($type, @details) = @{$LIFECYCLE[$type_code]};
        for my $detail_code (0 .. $#details + 1) {
            my $r = $M->record('lifecycle', $CONN, $OBJECT{domain}, $type_code, $detail_code);
            my $want = $details[$detail_code];
            push @wrong, "$type_code/$detail_code: got " . join('/', map { $_ // 'undef' } @$r{qw(type detail)})
                unless ($r->{type} // '') eq $type && (defined $want ? ($r->{detail} // '') eq $want
                                                                     : !defined $r->{detail});
        }
    }
    ok(!@wrong, "$F: lifecycle: every type and detail named as virsh names them, undef past the last")
        or diag(join "\n", @wrong);
}

# -- the object ------------------------------------------------------------

{
    my $r = $M->record('reboot', $CONN, undef);
    ok(exists $r->{name} && !defined $r->{name} && exists $r->{uuid} && !defined $r->{uuid},
       "$F: no object: name and uuid undef");
    is($M->describe($r), "event 'reboot' for domain ''", "$F: no object: describe");
    $r = $M->record('lifecycle', $CONN, $OBJECT{domain});
    is_deeply([ @$r{qw(type type_code detail detail_code)} ], [ undef, undef, undef, undef ],
              "$F: lifecycle without its arguments: every code field undef");
    is($M->describe($r), "event 'lifecycle' for domain 'web1': - -", "$F: ... describe: - for each");
    $r = { event => 'io-error', kind => 'domain' };
    is($M->describe($r), "event 'io-error' for domain '': src_path=- dev_alias=- action=-",
       "$F: describe of a record without its fields: - for each");
}

# -- the URI of an instance -------------------------------------------------

{
    my $monitor = $M->new(uri => 'test:///formatting');
    my $r = $monitor->record('watchdog', $CONN, $OBJECT{domain}, 1);
    is($r->{uri}, 'test:///formatting', "$F: record as an instance method: uri is the monitor's");
    ok(!$monitor->is_running && !$monitor->is_connected, "$F: ... and nothing was started");
}

# -- what the record holds is its own ---------------------------------------

{
    my %params = (a => 1, b => 'x');
    my @subject = ({ type => 't', name => 'n' });
    my %local = (family => 0, node => '10.0.0.1', service => '5901');
    my $r = $M->record('tunable', $CONN, $OBJECT{domain}, \%params);
    isnt($r->{params}, \%params, "$F: tunable: params is a copy");
    $params{c} = 3;
    $params{a} = 9;
    is_deeply($r->{params}, { a => 1, b => 'x' }, "$F: tunable: changing the arguments later leaves the record");
    $r = $M->record('graphics', $CONN, $OBJECT{domain}, 1, \%local, undef, undef, \@subject);
    isnt($r->{local}, \%local, "$F: graphics: local is a copy");
    isnt($r->{subject}, \@subject, "$F: graphics: subject is a copy");
    isnt($r->{subject}[0], $subject[0], "$F: graphics: each identity is a copy");
    $subject[0]{name} = 'changed';
    $local{node} = 'changed';
    is($r->{subject}[0]{name}, 'n', "$F: graphics: changing the arguments later leaves the record");
    is($r->{local}{node}, '10.0.0.1', "$F: graphics: ... local too");
    is($r->{remote}, undef, "$F: graphics: a missing address is undef");
    is($M->describe($r),
       "event 'graphics' for domain 'web1': phase=initialize local.family=IPv4 local.node=10.0.0.1"
       . ' local.service=5901 remote=- auth_scheme=- subject.0.name=n subject.0.type=t',
       "$F: graphics: describe, with a missing address and auth scheme");
    $r = $M->record('job-completed', $CONN, $OBJECT{domain}, undef);
    is_deeply($r->{params}, {}, "$F: job-completed without params: an empty hash");
}

# -- names and values that need quotes ----------------------------------------

{
    my @names = (
        [ 'web 1',             q{'web 1'},                    'a space' ],
        [ "web\n1",            q{'web\n1'},                   'a newline' ],
        [ "web\r\t1",          q{'web\r\t1'},                 'a return and a tab' ],
        [ q{it's},             q{'it\'s'},                    'a single quote' ],
        [ q{a"b},              q{'a\"b'},                     'a double quote' ],
        [ 'a\\b',              q{'a\\\\b'},                   'a backslash' ],
        [ "caf\xc3\xa9",       "'caf\xc3\xa9'",               'non-ASCII UTF-8 (as it is)' ],
        [ "\xe6\x97\xa5\xe6\x9c\xac", "'\xe6\x97\xa5\xe6\x9c\xac'", 'another script (as it is)' ],
        [ "a\xe2\x80\xa8b",    q{'a\xe2\x80\xa8b'},           'U+2028, a line separator' ],
        [ "a\x{0}b\x1bc",      q{'a\x00b\x1bc'},              'control characters' ],
        [ "bad\xff",           q{'bad\xff'},                  'bytes that are not UTF-8' ],
        [ '',                  q{''},                         'no character' ],
        [ "x' dev_alias=y",    q{'x\' dev_alias=y'},          'an attempt to forge a field' ],
    );
    for my $case (@names) {
        my ($name, $quoted, $what) = @$case;
        my $dom = Stub::Domain->new(name => $name, uuid => $DOM_UUID);
        my $r = $M->record('device-added', $CONN, $dom, 'net0');
        is($r->{name}, $name, "$F: a name with $what: kept as it is in the record");
        my $line = $M->describe($r);
        is($line, "event 'device-added' for domain $quoted: dev_alias=net0",
           "$F: a name with $what: describe quotes it");
        unlike($line, qr/[\n\r]/, "$F: a name with $what: one line");
    }
    my @values = (
        [ 'plain-value_1.2:3/4', 'plain-value_1.2:3/4',     'punctuation only' ],
        [ 'a b',                 '"a b"',                   'a space' ],
        [ "a\nb",                '"a\nb"',                  'a newline' ],
        [ q{a"b},                q{"a\"b"},                 'a double quote' ],
        [ q{a'b},                q{"a\'b"},                 'a single quote' ],
        [ "caf\xc3\xa9",         "caf\xc3\xa9",             'non-ASCII UTF-8' ],
        [ "a\xe2\x80\xa8b",      '"a\xe2\x80\xa8b"',        'U+2028' ],
        [ '',                    '""',                      'no character' ],
        [ 'x action=report',     '"x action=report"',       'an attempt to forge a field' ],
    );
    for my $case (@values) {
        my ($value, $word, $what) = @$case;
        my $r = $M->record('io-error', $CONN, $OBJECT{domain}, $value, 'd0', 1);
        is($M->describe($r), "event 'io-error' for domain 'web1': src_path=$word dev_alias=d0 action=pause",
           "$F: a value with $what: describe");
        is($M->quote($value), $word, "$F: quote of a value with $what");
    }
    is($M->quote("a\x{2028}b"), '"a\xe2\x80\xa8b"',
       "$F: quote of a character string (not bytes): escaped by its UTF-8 bytes");
    my $tunable = $M->record('tunable', $CONN, $OBJECT{domain},
                             { 'a b' => 1, "x\ny" => 'v w', 'cputune.vcpu_period' => 2 });
    is($M->describe($tunable),
       "event 'tunable' for domain 'web1': params.\"a b\"=1 params.cputune.vcpu_period=2"
       . ' params."x\ny"="v w"',
       "$F: parameter names quoted as values are: none can add a field");
    is($M->describe($M->record('tunable', $CONN, $OBJECT{domain}, {})),
       "event 'tunable' for domain 'web1'", "$F: tunable without parameters: no colon after the name");
    my $r = $M->record('secret-value-changed', $CONN, Stub::Secret->new(uuid => 'a b'));
    is($M->describe($r), q{event 'secret-value-changed' for secret 'a b'},
       "$F: a secret is named by its uuid in describe");
}

# -- the connection events, on hand-made records --------------------------------

{
    my %base = (time => 1, uri => 'test:///x', kind => 'connection', name => undef, uuid => undef);
    my @lines = (
        [ { event => 'close', reason => 'error', reason_code => 0 }, 'connection close: reason=error' ],
        [ { event => 'close', reason => 'eof', reason_code => 1 }, 'connection close: reason=eof' ],
        [ { event => 'close', reason => 'keepalive', reason_code => 2 }, 'connection close: reason=keepalive' ],
        [ { event => 'close', reason => 'client', reason_code => 3 }, 'connection close: reason=client' ],
        [ { event => 'close', reason => undef, reason_code => 9 }, 'connection close: reason=9',
          'a reason unknown to the module' ],
        [ { event => 'close' }, 'connection close: reason=-', 'no reason' ],
        [ { event => 'reconnect', attempts => 3, down_seconds => 2.514 },
          'connection reconnect: attempts=3 down_seconds=2.514' ],
        [ { event => 'reconnect', attempts => 1, down_seconds => 0 },
          'connection reconnect: attempts=1 down_seconds=0' ],
    );
    for my $case (@lines) {
        my ($fields, $line, $what) = @$case;
        is($M->describe({ %base, %$fields }), $line,
           "$F: describe of a hand-made $fields->{event} record" . ($what ? " ($what)" : ''));
    }
}

done_testing;

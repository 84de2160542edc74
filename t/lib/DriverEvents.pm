package DriverEvents;

# The events libvirt 9.0's test driver emits, and the actions that make
# them: one table for the tests that check every one of them arrives
# (through Sys::Virt::Event::Monitor, through virt-events --json, in
# process and through a private libvirtd).
#
#   for my $step (DriverEvents::steps($tmpdir)) {
#       my ($what, $action, @expected) = @$step;
#       $action->($conn);
#       # @expected: { event => ..., kind => ..., name => ..., field => value }
#   }
#
# The steps run in order on a test driver in its default state (a fresh
# test:///default in a new process, or a new private daemon) and leave
# it as it was, but for the saved image in $tmpdir.  A name given as a
# regular expression (the vHBA's, which the driver numbers) matches any
# such name.
#
# Also @DriverEvents::DOMAIN_EVENTS: the 27 domain event names in
# libvirt's id order, and @DriverEvents::OTHER_EVENTS: the 7 of the other
# objects (for the tests of event_names and virt-events --list).

use strict;
use warnings;

use Sys::Virt ();

# The 27 domain event names, in the order of libvirt's event ids
# (VIR_DOMAIN_EVENT_ID_LIFECYCLE = 0 to ..._MEMORY_DEVICE_SIZE_CHANGE =
# 26, libvirt 9.0): what Sys::Virt::Event::Monitor->event_names and
# virt-events --list give first.
our @DOMAIN_EVENTS = qw(lifecycle reboot rtc-change watchdog io-error graphics
    io-error-reason control-error block-job disk-change tray-change pm-wakeup
    pm-suspend balloon-change pm-suspend-disk device-removed block-job-2
    tunable agent-lifecycle device-added migration-iteration job-completed
    device-removal-failed metadata-change block-threshold memory-failure
    memory-device-size-change);

# The events of networks, storage pools, node devices and secrets, in
# the order event_names gives them.
our @OTHER_EVENTS = qw(network-lifecycle pool-lifecycle pool-refresh
    nodedev-lifecycle nodedev-update secret-lifecycle secret-value-changed);

# Types the test driver emits, verified end to end.
our @EMITTED = qw(lifecycle metadata-change network-lifecycle pool-lifecycle
                  pool-refresh nodedev-lifecycle);

my $NS = 'http://example.org/sys-virt-event/1';
my $NEW_DOMAIN = "<domain type='test'><name>sve-new</name>"
    . "<uuid>c7a5fdbd-cdaf-9455-926a-d65c16db1809</uuid>"
    . "<memory unit='KiB'>65536</memory><os><type>hvm</type></os></domain>";
my $NETWORK = "<network><name>sve-net</name><bridge name='svebr0'/>"
    . "<ip address='192.168.150.1' netmask='255.255.255.0'/></network>";
# the test driver never touches the path
my $POOL = "<pool type='dir'><name>sve-pool</name>"
    . "<target><path>/nonexistent/sve-pool</path></target></pool>";
my $VHBA = "<device><parent>scsi_host1</parent><capability type='scsi_host'>"
    . "<capability type='fc_host'><wwnn>2000000012345678</wwnn>"
    . "<wwpn>1000000012345678</wwpn></capability></capability></device>";

sub _lifecycle {
    my ($name, $type, $detail) = @_;
    return { event => 'lifecycle', kind => 'domain', name => $name,
             type => $type, detail => $detail };
}

sub _object {
    my ($event, $kind, $name, $type) = @_;
    return { event => $event, kind => $kind, name => $name,
             (defined $type ? (type => $type, detail_code => 0) : ()) };
}

# ([what, sub { my ($conn) = @_; ... }, expected record, ...], ...)
sub steps {
    my ($tmpdir) = @_;
    my $image = "$tmpdir/test.save";
    my %held;       # objects made by one step, used by the next
    my $dom = sub { $_[0]->get_domain_by_name('test') };
    return (
        [ 'suspend domain test', sub { $dom->($_[0])->suspend },
          _lifecycle(test => Suspended => 'Paused') ],
        [ 'resume domain test', sub { $dom->($_[0])->resume },
          _lifecycle(test => Resumed => 'Unpaused') ],
        [ 'set the description of domain test', sub {
              $dom->($_[0])->set_metadata(Sys::Virt::Domain::METADATA_DESCRIPTION(),
                                         'watched', undef, undef, 0) },
          { event => 'metadata-change', kind => 'domain', name => 'test',
            type => 'description', type_code => 0, nsuri => undef } ],
        [ 'set an element of metadata of domain test', sub {
              $dom->($_[0])->set_metadata(Sys::Virt::Domain::METADATA_ELEMENT(),
                                         '<seen>1</seen>', 'sve', $NS, 0) },
          { event => 'metadata-change', kind => 'domain', name => 'test',
            type => 'element', type_code => 2, nsuri => $NS } ],
        [ 'save domain test', sub { $dom->($_[0])->save($image) },
          _lifecycle(test => Stopped => 'Saved') ],
        [ 'restore domain test', sub { $_[0]->restore_domain($image) },
          _lifecycle(test => Started => 'Restored') ],
        [ 'destroy domain test', sub { $dom->($_[0])->destroy },
          _lifecycle(test => Stopped => 'Destroyed') ],
        [ 'rename domain test to sve-renamed and back', sub {
              $dom->($_[0])->rename('sve-renamed');
              $_[0]->get_domain_by_name('sve-renamed')->rename('test') },
          _lifecycle(test => Undefined => 'Renamed'),
          _lifecycle('sve-renamed' => Defined => 'Renamed'),
          _lifecycle('sve-renamed' => Undefined => 'Renamed'),
          _lifecycle(test => Defined => 'Renamed') ],
        [ 'start domain test', sub { $dom->($_[0])->create },
          _lifecycle(test => Started => 'Booted') ],
        [ 'snapshot domain test and revert to it', sub {
              my $snap = $dom->($_[0])->create_snapshot(
                  '<domainsnapshot><name>sve-snap</name></domainsnapshot>');
              $snap->revert_to;
              $snap->delete },
          _lifecycle(test => Stopped => 'Snapshot'),
          _lifecycle(test => Started => 'Snapshot') ],
        [ 'define domain sve-new', sub { $_[0]->define_domain($NEW_DOMAIN) },
          _lifecycle('sve-new' => Defined => 'Added') ],
        [ 'undefine domain sve-new', sub {
              $_[0]->get_domain_by_name('sve-new')->undefine },
          _lifecycle('sve-new' => Undefined => 'Removed') ],
        [ 'define network sve-net', sub { $_[0]->define_network($NETWORK) },
          _object('network-lifecycle', network => 'sve-net', 'Defined') ],
        [ 'start network sve-net', sub {
              $_[0]->get_network_by_name('sve-net')->create },
          _object('network-lifecycle', network => 'sve-net', 'Started') ],
        [ 'destroy network sve-net', sub {
              $_[0]->get_network_by_name('sve-net')->destroy },
          _object('network-lifecycle', network => 'sve-net', 'Stopped') ],
        [ 'undefine network sve-net', sub {
              $_[0]->get_network_by_name('sve-net')->undefine },
          _object('network-lifecycle', network => 'sve-net', 'Undefined') ],
        [ 'define storage pool sve-pool', sub { $_[0]->define_storage_pool($POOL) },
          _object('pool-lifecycle', pool => 'sve-pool', 'Defined') ],
        [ 'build storage pool sve-pool', sub {
              $_[0]->get_storage_pool_by_name('sve-pool')->build },
          _object('pool-lifecycle', pool => 'sve-pool', 'Created') ],
        [ 'start storage pool sve-pool', sub {
              $_[0]->get_storage_pool_by_name('sve-pool')->create },
          _object('pool-lifecycle', pool => 'sve-pool', 'Started') ],
        [ 'refresh storage pool sve-pool', sub {
              $_[0]->get_storage_pool_by_name('sve-pool')->refresh },
          _object('pool-refresh', pool => 'sve-pool') ],
        [ 'destroy storage pool sve-pool', sub {
              $_[0]->get_storage_pool_by_name('sve-pool')->destroy },
          _object('pool-lifecycle', pool => 'sve-pool', 'Stopped') ],
        [ 'delete storage pool sve-pool', sub {
              $_[0]->get_storage_pool_by_name('sve-pool')->delete },
          _object('pool-lifecycle', pool => 'sve-pool', 'Deleted') ],
        [ 'undefine storage pool sve-pool', sub {
              $_[0]->get_storage_pool_by_name('sve-pool')->undefine },
          _object('pool-lifecycle', pool => 'sve-pool', 'Undefined') ],
        [ 'create a vHBA node device', sub {
              $held{vhba} = $_[0]->create_node_device($VHBA)->get_name },
          _object('nodedev-lifecycle', nodedev => qr/\Ascsi_host[0-9]+\z/, 'Created') ],
        [ 'destroy the vHBA', sub {
              $_[0]->get_node_device_by_name($held{vhba})->destroy },
          _object('nodedev-lifecycle', nodedev => qr/\Ascsi_host[0-9]+\z/, 'Deleted') ],
    );
}

# Whether $record has every field of $expected (a regular expression
# matches a string); the differences, as text, when it has not.
sub mismatches {
    my ($record, $expected) = @_;
    my @wrong;
    for my $field (sort keys %$expected) {
        my ($want, $got) = ($expected->{$field}, $record->{$field});
        my $ok = ref $want eq 'Regexp' ? defined $got && $got =~ $want
               : !defined $want ? !defined $got
               : defined $got && $got eq $want;
        push @wrong, "$field: got " . ($got // 'undef') . ', want ' . ($want // 'undef')
            unless $ok;
    }
    return @wrong;
}

1;

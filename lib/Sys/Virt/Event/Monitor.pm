package Sys::Virt::Event::Monitor;

# Every libvirt event of one connection, as plain records, to any number
# of callbacks; the connection kept open across daemon restarts.  Runs on
# whatever loop is registered with Sys::Virt::Event: its timers are that
# module's public add_timeout().

use 5.018;
use strict;
use warnings;

use Carp ();
use POSIX ();
use Scalar::Util ();
use Time::HiRes ();

use Sys::Virt ();
use Sys::Virt::Event ();

our $VERSION = '0.02';

# ---- the event types -----------------------------------------------------
#
# Code names are those virsh prints (tools/virsh-*.c), indexed by code.

my @LIFECYCLE = qw(Defined Undefined Started Suspended Resumed Stopped
                   Shutdown PMSuspended Crashed);
my %LIFECYCLE_DETAIL = (
    Defined     => [ 'Added', 'Updated', 'Renamed', 'Snapshot' ],
    Undefined   => [ 'Removed', 'Renamed' ],
    Started     => [ 'Booted', 'Migrated', 'Restored', 'Snapshot',
                     'Event wakeup' ],
    Suspended   => [ 'Paused', 'Migrated', 'I/O Error', 'Watchdog',
                     'Restored', 'Snapshot', 'API error', 'Post-copy',
                     'Post-copy Error' ],
    Resumed     => [ 'Unpaused', 'Migrated', 'Snapshot', 'Post-copy',
                     'Post-copy Error' ],
    Stopped     => [ 'Shutdown', 'Destroyed', 'Crashed', 'Migrated', 'Saved',
                     'Failed', 'Snapshot' ],
    Shutdown    => [ 'Finished', 'Finished after guest request',
                     'Finished after host request' ],
    PMSuspended => [ 'Memory', 'Disk' ],
    Crashed     => [ 'Panicked', 'Crashloaded' ],
);
my %NAMES = (
    lifecycle_type   => \@LIFECYCLE,
    watchdog_action  => [ qw(none pause reset poweroff shutdown debug
                             inject-nmi) ],
    io_error_action  => [ qw(none pause report) ],
    graphics_phase   => [ qw(connect initialize disconnect) ],
    address_family   => [ qw(IPv4 IPv6 unix) ],
    block_job_type   => [ 'Unknown job', 'Block Pull', 'Block Copy',
                          'Block Commit', 'Active Block Commit', 'Backup' ],
    block_job_status => [ qw(completed failed canceled ready) ],
    disk_change      => [ qw(changed dropped) ],
    tray_change      => [ qw(opened closed) ],
    agent_state      => [ qw(unknown connected disconnected) ],
    agent_reason     => [ 'unknown', 'domain started', 'channel event' ],
    metadata_type    => [ qw(description title element) ],
    memory_recipient => [ qw(hypervisor guest) ],
    memory_action    => [ qw(ignore inject fatal reset) ],
    network_event    => [ qw(Defined Undefined Started Stopped) ],
    pool_event       => [ qw(Defined Undefined Started Stopped Created
                             Deleted) ],
    nodedev_event    => [ qw(Created Deleted Defined Undefined) ],
    secret_event     => [ qw(Defined Undefined) ],
    close_reason     => [ qw(error eof keepalive client) ],
);

# How each kind of object is registered for and named.
my %KIND = (
    domain  => { class => 'Sys::Virt::Domain',      registration => 'domain_event' },
    network => { class => 'Sys::Virt::Network',     registration => 'network_event' },
    pool    => { class => 'Sys::Virt::StoragePool', registration => 'storage_pool_event' },
    nodedev => { class => 'Sys::Virt::NodeDevice',  registration => 'node_device_event',
                 no_uuid => 1 },
    secret  => { class => 'Sys::Virt::Secret',      registration => 'secret_event',
                 no_name => 1 },
);

# Arguments, after the connection and the object, as Sys::Virt passes
# them: [field => how to read it].  A name from %NAMES puts the code's
# name under the field and the code under FIELD_code.
my @TYPES = (
    # name                      kind      EVENT_ID_*                 arguments
    [ 'lifecycle',              domain => 'LIFECYCLE',               [ type => 'lifecycle_type', detail => \&_lifecycle_detail ] ],
    [ 'reboot',                 domain => 'REBOOT',                  [] ],
    [ 'rtc-change',             domain => 'RTC_CHANGE',              [ utc_offset => undef ] ],
    [ 'watchdog',               domain => 'WATCHDOG',                [ action => 'watchdog_action' ] ],
    [ 'io-error',               domain => 'IO_ERROR',                [ src_path => undef, dev_alias => undef,
                                                                       action => 'io_error_action' ] ],
    [ 'graphics',               domain => 'GRAPHICS',                [ phase => 'graphics_phase', local => \&_address,
                                                                       remote => \&_address, auth_scheme => undef,
                                                                       subject => \&_subject ] ],
    [ 'io-error-reason',        domain => 'IO_ERROR_REASON',         [ src_path => undef, dev_alias => undef,
                                                                       action => 'io_error_action', reason => undef ] ],
    [ 'control-error',          domain => 'CONTROL_ERROR',           [] ],
    [ 'block-job',              domain => 'BLOCK_JOB',               [ path => undef, type => 'block_job_type',
                                                                       status => 'block_job_status' ] ],
    [ 'disk-change',            domain => 'DISK_CHANGE',             [ old_src_path => undef, new_src_path => undef,
                                                                       dev_alias => undef, reason => 'disk_change' ] ],
    [ 'tray-change',            domain => 'TRAY_CHANGE',             [ dev_alias => undef, reason => 'tray_change' ] ],
    [ 'pm-wakeup',              domain => 'PMWAKEUP',                [ reason => undef ] ],
    [ 'pm-suspend',             domain => 'PMSUSPEND',               [ reason => undef ] ],
    [ 'balloon-change',         domain => 'BALLOON_CHANGE',          [ actual => undef ] ],
    [ 'pm-suspend-disk',        domain => 'PMSUSPEND_DISK',          [ reason => undef ] ],
    [ 'device-removed',         domain => 'DEVICE_REMOVED',          [ dev_alias => undef ] ],
    [ 'block-job-2',            domain => 'BLOCK_JOB_2',             [ disk => undef, type => 'block_job_type',
                                                                       status => 'block_job_status' ] ],
    [ 'tunable',                domain => 'TUNABLE',                 [ params => \&_params ] ],
    [ 'agent-lifecycle',        domain => 'AGENT_LIFECYCLE',         [ state => 'agent_state', reason => 'agent_reason' ] ],
    [ 'device-added',           domain => 'DEVICE_ADDED',            [ dev_alias => undef ] ],
    [ 'migration-iteration',    domain => 'MIGRATION_ITERATION',     [ iteration => undef ] ],
    [ 'job-completed',          domain => 'JOB_COMPLETED',           [ params => \&_params ] ],
    [ 'device-removal-failed',  domain => 'DEVICE_REMOVAL_FAILED',   [ dev_alias => undef ] ],
    [ 'metadata-change',        domain => 'METADATA_CHANGE',         [ type => 'metadata_type', nsuri => undef ] ],
    [ 'block-threshold',        domain => 'BLOCK_THRESHOLD',         [ dev => undef, path => undef, threshold => undef,
                                                                       excess => undef ] ],
    [ 'memory-failure',         domain => 'MEMORY_FAILURE',          [ recipient => 'memory_recipient',
                                                                       action => 'memory_action', flags => \&_memory_flags ] ],
    [ 'memory-device-size-change', domain => 'MEMORY_DEVICE_SIZE_CHANGE', [ alias => undef, size => undef ] ],
    [ 'network-lifecycle',      network => 'LIFECYCLE',              [ type => 'network_event', detail_code => undef ] ],
    [ 'pool-lifecycle',         pool    => 'LIFECYCLE',              [ type => 'pool_event', detail_code => undef ] ],
    [ 'pool-refresh',           pool    => 'REFRESH',                [] ],
    [ 'nodedev-lifecycle',      nodedev => 'LIFECYCLE',              [ type => 'nodedev_event', detail_code => undef ] ],
    [ 'nodedev-update',         nodedev => 'UPDATE',                 [] ],
    [ 'secret-lifecycle',       secret  => 'LIFECYCLE',              [ type => 'secret_event', detail_code => undef ] ],
    [ 'secret-value-changed',   secret  => 'VALUE_CHANGED',          [] ],
);

# The monitor's own events, about the connection.
my @CONNECTION_EVENTS = qw(close reconnect);

# The bits of memory-failure's flags, each also a field of its own:
# VIR_DOMAIN_MEMORY_FAILURE_ACTION_REQUIRED and _RECURSIVE.
my @MEMORY_FLAGS = ([ action_required => 1 ], [ recursive => 2 ]);

my (%TYPE, @OBJECT_EVENTS);
for my $row (@TYPES) {
    my ($name, $kind, $id, $args) = @$row;
    my $constant = $KIND{$kind}{class}->can("EVENT_ID_$id");
    push @OBJECT_EVENTS, $name;
    my @fields = map { [ @$args[2 * $_, 2 * $_ + 1] ] } 0 .. @$args / 2 - 1;
    $TYPE{$name} = { kind => $kind,
                     # [field, how, whether a number] per argument, in order
                     fields => [ map { [ @$_, !defined $_->[1] && $_->[0] =~ /_code\z/ ? 1 : 0 ] }
                                 @fields ],
                     # the fields describe shows, in order: the arguments',
                     # and the flag bits after memory-failure's flags
                     shown => [ map { ($_->[0], ref $_->[1] && $_->[1] == \&_memory_flags
                                                ? map { $_->[0] } @MEMORY_FLAGS : ()) } @fields ],
                     # "TYPE DETAIL" in a line, as virsh prints lifecycle events
                     lifecycle => (@fields == 2 && $fields[0][0] eq 'type'
                                   && $fields[1][0] =~ /\Adetail/) ? 1 : 0,
                     # undef: this Sys::Virt does not know the event
                     id => $constant ? $constant->() : undef };
}

sub event_names { return (@OBJECT_EVENTS, @CONNECTION_EVENTS) }

# ---- making records ------------------------------------------------------

sub _code_name {
    my ($table, $code) = @_;
    return _is_code($code) ? $NAMES{$table}[$code] : undef;
}

sub _is_code { return defined $_[0] && $_[0] =~ /\A[0-9]+\z/ }

# Readers of one argument: (the record so far, field, value); each
# stores what it reads.
sub _lifecycle_detail {
    my ($record, $field, $code) = @_;
    my $table = defined $record->{type} ? $LIFECYCLE_DETAIL{$record->{type}} : undef;
    $record->{detail} = $table && _is_code($code) ? $table->[$code] : undef;
    $record->{detail_code} = _number($code);
    return;
}

sub _address {
    my ($record, $field, $address) = @_;
    $record->{$field} = ref $address eq 'HASH'
        ? { %$address,
            family => _code_name(address_family => $address->{family}),
            family_code => _number($address->{family}) }
        : undef;
    return;
}

sub _subject {
    my ($record, $field, $subject) = @_;
    $record->{$field} = [ map { { %$_ } } grep { ref eq 'HASH' }
                          ref $subject eq 'ARRAY' ? @$subject : () ];
    return;
}

sub _params {
    my ($record, $field, $params) = @_;
    $record->{$field} = { ref $params eq 'HASH' ? %$params : () };
    return;
}

sub _memory_flags {
    my ($record, $field, $flags) = @_;
    my $bits = _number($flags) // 0;
    $record->{$field} = _number($flags);
    $record->{$_->[0]} = $bits & $_->[1] ? 1 : 0 for @MEMORY_FLAGS;
    return;
}

sub _number {
    my ($value) = @_;
    return defined $value ? $value + 0 : undef;
}

# The record of an event of type $name, from the arguments Sys::Virt
# passes its callback ($conn, $object, ...).  Class or instance method.
sub record {
    my ($self, $name, undef, $object, @values) = @_;
    my $type = defined $name && $TYPE{$name}
        or Carp::croak("Sys::Virt::Event::Monitor->record: unknown event type '"
                       . ($name // 'undef') . q{'});
    my %record = (time => Time::HiRes::time(),
                  uri => ref $self ? $self->{uri} : undef,
                  kind => $type->{kind}, event => $name);
    @record{qw(name uuid)} = _identity($type->{kind}, $object);

    for my $arg (@{$type->{fields}}) {
        my ($field, $how, $is_number) = @$arg;
        my $value = shift @values;
        if (!defined $how) {
            $record{$field} = $is_number ? _number($value) : $value;
        } elsif (ref $how) {
            $how->(\%record, $field, $value);
        } else {
            # _number and _code_name, written out: most events come here
            # (bench/monitor.pl)
            $record{"${field}_code"} = defined $value ? $value + 0 : undef;
            $record{$field} = defined $value && $value =~ /\A[0-9]+\z/
                ? $NAMES{$how}[$value] : undef;
        }
    }
    return \%record;
}

# (name, uuid) of an object that came with an event; libvirt keeps both
# in the object, so no call goes to the daemon.
sub _identity {
    my ($kind, $object) = @_;
    return (undef, undef) unless Scalar::Util::blessed($object);
    my $how = $KIND{$kind};
    my ($name, $uuid);
    eval {
        $name = $object->get_name unless $how->{no_name};
        $uuid = $object->get_uuid_string unless $how->{no_uuid};
    };
    return ($name, $uuid);
}

sub _connection_record {
    my ($self, $event, %fields) = @_;
    return { time => Time::HiRes::time(), uri => $self->{uri},
             kind => 'connection', event => $event,
             name => undef, uuid => undef, %fields };
}

# ---- a line of text ------------------------------------------------------

# How each event's arguments read, after "event 'NAME' for KIND 'OBJECT':".
# Lifecycle events read as virsh prints them ("Stopped Destroyed"); the
# others as field=value, in the order Sys::Virt passes them.
sub describe {
    my (undef, $record) = @_;
    Carp::croak('Sys::Virt::Event::Monitor->describe: needs an event record (a hash reference)')
        unless ref $record eq 'HASH' && defined $record->{event};
    my $event = $record->{event};
    my $kind = $record->{kind} // '';

    if ($kind eq 'connection') {
        my @fields = $event eq 'close' ? ('reason')
                   : qw(attempts down_seconds);
        return join ' ', "connection $event:", map { "$_=" . _shown($record, $_) } @fields;
    }

    my $type = $TYPE{$event};
    my $what = $KIND{$kind} && $KIND{$kind}{no_name} ? $record->{uuid} : $record->{name};
    my $text = "event '$event' for $kind " . _quoted($what // '');
    return $text unless $type && @{$type->{shown}};

    if ($type->{lifecycle}) {
        my @words = (_shown($record, 'type'));
        push @words, _shown($record, 'detail') if $kind eq 'domain';
        return "$text: @words";
    }
    my @pairs = map { _flatten($_, $record->{$_}, $record->{"${_}_code"}) } @{$type->{shown}};
    return $text unless @pairs;    # a hash of parameters without any
    return "$text: " . join ' ', map {
        "$_->[0]=" . (defined $_->[1] ? _word($_->[1]) : '-')
    } @pairs;
}

# A field as one word: its name, or its code (FIELD_code) when the name
# is unknown, or '-'.
sub _shown {
    my ($record, $field) = @_;
    my $value = $record->{$field} // $record->{"${field}_code"};
    return defined $value ? _word($value) : '-';
}

# ([path, value], ...) for a value, nested hashes and arrays walked
# (keys sorted); a code that has a name (FIELD beside FIELD_code) reads
# as the name, one without (the name undef) as the code, $code.
sub _flatten {
    my ($path, $value, $code) = @_;
    if (ref $value eq 'HASH') {
        # a key quoted as a value is: none can add a field
        return map { _flatten("$path." . _word($_), $value->{$_}, $value->{"${_}_code"}) }
               grep { !(/\A(.+)_code\z/ && exists $value->{$1}) } sort keys %$value;
    }
    if (ref $value eq 'ARRAY') {
        return map { _flatten("$path.$_", $value->[$_]) } 0 .. $#$value;
    }
    return [ $path => $value // $code ];
}

my %ESCAPE = ('\\' => '\\\\', '"' => '\\"', q{'} => q{\\'},
              "\t" => '\\t', "\n" => '\\n', "\r" => '\\r');

# A value (UTF-8 bytes, from libvirt) as one word that nothing in it can
# break or forge: as it is when it is made only of letters, marks,
# digits, punctuation and symbols (of any script) other than quotes and
# backslash; otherwise in double quotes, with \\ \" \' \t \n \r, a space
# as itself and any other character as \xHH per UTF-8 byte.
sub quote {
    my (undef, $bytes) = @_;
    return _word($bytes);
}

sub _word {
    my ($value) = @_;
    my ($bytes, $text, $plain, $is_utf8) = _decoded($value);
    # a lone '-' would read as a missing value
    return $bytes if length $text && $text ne '-' && $text =~ /\A$plain+\z/;
    return '"' . _escaped($text, $plain, $is_utf8) . '"';
}

# An object's name in single quotes, as virsh prints it, escaped as above.
sub _quoted {
    my ($value) = @_;
    my (undef, @text) = _decoded($value);
    return q{'} . _escaped(@text) . q{'};
}

my $PLAIN_UTF8  = qr/(?!["'\\])[\p{L}\p{M}\p{N}\p{P}\p{S}]/;
my $PLAIN_BYTES = qr/(?!["'\\])[!-~]/;

# (its bytes, its text, a pattern of the characters that stand as
# themselves in it, whether it was UTF-8) for a value: bytes, or a
# string with characters above U+00FF, taken as its UTF-8 form
sub _decoded {
    my ($value) = @_;
    my $bytes = "$value";
    utf8::encode($bytes) unless utf8::downgrade($bytes, 1);
    my $text = $bytes;
    my $is_utf8 = utf8::decode($text);
    return ($bytes, $text, $is_utf8 ? $PLAIN_UTF8 : $PLAIN_BYTES, $is_utf8);
}

sub _escaped {
    my ($text, $plain, $is_utf8) = @_;
    $text =~ s{($plain| )|(.)}{
        defined $1 ? $1 : $ESCAPE{$2} // _hex_bytes($2, $is_utf8)
    }gse;
    utf8::encode($text) if $is_utf8;
    return $text;
}

sub _hex_bytes {
    my ($char, $is_utf8) = @_;
    utf8::encode($char) if $is_utf8;
    return join '', map { sprintf '\\x%02x', ord } split //, $char;
}

# ---- the monitor ---------------------------------------------------------

my %DEFAULTS = (
    uri       => undef,
    reconnect => 1,
    keepalive => [ 5, 3 ],
    backoff   => [ 0.5, 30 ],
    connect_timeout => 10,
    on_error  => undef,
);

sub new {
    my ($class, %opt) = @_;
    my @unknown = grep { !exists $DEFAULTS{$_} } sort keys %opt;
    Carp::croak("Sys::Virt::Event::Monitor->new: unknown option '$unknown[0]'")
        if @unknown;
    my %self = (%DEFAULTS, %opt);
    my $ka = $self{keepalive};
    Carp::croak('Sys::Virt::Event::Monitor->new: keepalive must be undef or '
                . '[interval, count], whole numbers of seconds and of messages')
        if defined $ka && !(ref $ka eq 'ARRAY' && @$ka == 2
                            && $ka->[0] =~ /\A[1-9][0-9]*\z/ && $ka->[1] =~ /\A[0-9]+\z/);
    my $backoff = $self{backoff};
    Carp::croak('Sys::Virt::Event::Monitor->new: backoff must be [first, most], '
                . 'positive numbers of seconds, the first not above the most')
        unless ref $backoff eq 'ARRAY' && @$backoff == 2
               && !grep({ !defined || !/\A(?:[0-9]+\.?[0-9]*|\.[0-9]+)\z/ || $_ <= 0 } @$backoff)
               && $backoff->[0] <= $backoff->[1];
    Carp::croak('Sys::Virt::Event::Monitor->new: connect_timeout must be a positive '
                . 'number of seconds, or 0 or undef for none')
        if defined $self{connect_timeout}
           && $self{connect_timeout} !~ /\A(?:[0-9]+\.?[0-9]*|\.[0-9]+)\z/;
    Carp::croak('Sys::Virt::Event::Monitor->new: on_error must be a code reference')
        if defined $self{on_error} && ref $self{on_error} ne 'CODE';

    return bless {
        %self,
        given_uri     => $self{uri},
        subscriptions => {},       # id => { id, events => {name => 1}, callback, filter }
        wanting       => {},       # event name => [subscriptions], in id order
        next_id       => 1,
        running       => 0,
        conn          => undef,
        registered    => {},       # event name => libvirt callback id
        close_registered => 0,
        timers        => {},       # Sys::Virt::Event timer id => 1
        runs          => 0,        # starts so far
        attempts      => 0,
        down_since    => undef,
        refused       => {},       # event name => 1: refused, said once
        last_error    => undef,    # why the last attempt to connect failed
        probe         => undef,    # the connection probe running, if any
        quiet         => 0,        # true: errors not reported (a dead connection)
    }, $class;
}

sub uri          { return $_[0]{uri} }
sub connection   { return $_[0]{conn} }
sub is_connected { return defined $_[0]{conn} }
sub is_running   { return $_[0]{running} }

# Names of the events libvirt has been asked for on this connection.
sub registered_events { return my @names = sort keys %{$_[0]{registered}} }

sub subscribe {
    my ($self, $events, $callback, %filter) = @_;
    my $me = 'Sys::Virt::Event::Monitor->subscribe';
    my @names = ref $events eq 'ARRAY' ? @$events : ($events);
    @names = event_names() if @names == 1 && defined $names[0] && $names[0] eq 'all';
    Carp::croak("$me: needs one or more event names, or 'all'") unless @names;
    for my $name (@names) {
        Carp::croak("$me: unknown event type '" . ($name // 'undef')
                    . q{' (see Sys::Virt::Event::Monitor->event_names)})
            unless defined $name && ($TYPE{$name} || grep { $_ eq $name } @CONNECTION_EVENTS);
    }
    Carp::croak("$me: the callback must be a code reference")
        unless ref $callback eq 'CODE';
    for my $key (sort keys %filter) {
        Carp::croak("$me: unknown filter '$key' (name or uuid)")
            unless $key eq 'name' || $key eq 'uuid';
        Carp::croak("$me: the $key filter must be a string")
            unless defined $filter{$key} && !ref $filter{$key};
    }

    my $id = $self->{next_id}++;
    $self->{subscriptions}{$id} = { id => $id, events => { map { $_ => 1 } @names },
                                    callback => $callback, filter => \%filter };
    delete $self->{wanting};
    $self->_register_wanted if $self->{conn};
    return $id;
}

sub unsubscribe {
    my ($self, $id) = @_;
    Carp::croak('Sys::Virt::Event::Monitor->unsubscribe: no subscription '
                . ($id // 'undef'))
        unless defined $id && delete $self->{subscriptions}{$id};
    delete $self->{wanting};
    $self->_deregister_unwanted if $self->{conn};
    return;
}

sub start {
    my ($self) = @_;
    Carp::croak('Sys::Virt::Event::Monitor->start: already started')
        if $self->{running};
    $self->{running} = 1;
    $self->{runs}++;        # a timer left by an earlier run is void
    $self->{attempts} = 0;
    return $self if $self->_connect;
    if (!$self->{reconnect}) {
        $self->{running} = 0;
        Carp::croak('Sys::Virt::Event::Monitor->start: ' . $self->{last_error});
    }
    $self->_error("$self->{last_error}: trying again");
    $self->{down_since} = Time::HiRes::time();
    $self->_retry_later;
    return $self;
}

sub stop {
    my ($self) = @_;
    return unless $self->{running};
    $self->{running} = 0;
    $self->_cancel_timers;
    $self->_end_probe;
    $self->_disconnect;
    return;
}

sub DESTROY {
    my ($self) = @_;
    return if ${^GLOBAL_PHASE} eq 'DESTRUCT';
    $self->stop;
}

# The events some subscription wants.
sub _wanted {
    my ($self) = @_;
    my %wanted;
    for my $sub (values %{$self->{subscriptions}}) {
        $wanted{$_} = 1 for grep { $TYPE{$_} } keys %{$sub->{events}};
    }
    return \%wanted;
}

sub _cannot_connect {
    my ($self, $why) = @_;
    return 'cannot connect to ' . ($self->{given_uri} // "libvirt's default URI") . ": $why";
}

# Opens the connection and registers what is wanted; false (the reason
# in last_error) when that failed, leaving nothing open.
sub _connect {
    my ($self) = @_;
    my $conn = eval { Sys::Virt->new(uri => $self->{given_uri}) };
    if (!$conn) {
        $self->{last_error} = $self->_cannot_connect(_error_text($@));
        return 0;
    }
    $self->{conn} = $conn;
    $self->{uri} = eval { $conn->get_uri } // $self->{given_uri};
    if (my $ka = $self->{keepalive}) {
        # drivers without keepalive (test:///, local ones) refuse it
        eval { $conn->set_keep_alive(@$ka) };
    }
    my $weak = $self;
    Scalar::Util::weaken($weak);
    if (eval { $conn->register_close_callback(sub { $weak->_on_close($_[1]) if $weak }); 1 }) {
        $self->{close_registered} = 1;
    } else {
        $self->{last_error} = "cannot watch the connection to $self->{uri}: " . _error_text($@);
        $self->_disconnect;
        return 0;
    }
    return 1 if $self->_register_wanted;
    $self->_disconnect;
    return 0;
}

# Registers each wanted event not yet registered.  An event the daemon
# does not know (an older libvirt) is reported and left out, as virsh
# does; losing the connection on the way is a failure.
sub _register_wanted {
    my ($self) = @_;
    my $conn = $self->{conn};
    my $wanted = $self->_wanted;
    my $weak = $self;
    Scalar::Util::weaken($weak);
    for my $name (grep { !exists $self->{registered}{$_} } sort keys %$wanted) {
        my $type = $TYPE{$name};
        if (!defined $type->{id}) {
            $self->_error("cannot watch '$name' events: this Sys::Virt does not know them")
                unless $self->{refused}{$name}++;
            next;
        }
        my $method = "$KIND{$type->{kind}}{registration}_register_any";
        my $id = eval {
            $conn->$method(undef, $type->{id}, sub { $weak->_deliver($name, @_) if $weak });
        };
        if (defined $id) {
            $self->{registered}{$name} = $id;
            next;
        }
        my $why = _error_text($@);
        if (!eval { $conn->is_alive }) {
            $self->{last_error} = "lost the connection to $self->{uri}: $why";
            return 0;
        }
        # said once: the next connection is likely to refuse it again
        $self->_error("cannot watch '$name' events on $self->{uri}: $why")
            unless $self->{refused}{$name}++;
    }
    return 1;
}

sub _deregister_unwanted {
    my ($self) = @_;
    my $wanted = $self->_wanted;
    for my $name (grep { !$wanted->{$_} } sort keys %{$self->{registered}}) {
        $self->_deregister($name);
    }
    return;
}

sub _deregister {
    my ($self, $name) = @_;
    my $id = delete $self->{registered}{$name};
    my $method = "$KIND{$TYPE{$name}{kind}}{registration}_deregister_any";
    eval { $self->{conn}->$method($id); 1 }
        or $self->_error("cannot stop watching '$name' events: " . _error_text($@));
    return;
}

# Deregisters everything and drops the connection.  On a connection that
# is closed already, each call fails at once: nothing waits.
sub _disconnect {
    my ($self) = @_;
    my $conn = $self->{conn} or return;
    local $self->{quiet} = !eval { $conn->is_alive };
    $self->_deregister($_) for sort keys %{$self->{registered}};
    eval { $conn->unregister_close_callback } if $self->{close_registered};
    $self->{close_registered} = 0;
    undef $self->{conn};
    return;
}

# libvirt calls this holding the lock of its close callback, which
# unregister_close_callback takes too: the close event and all that
# follows it wait for the loop's next turn, where a subscriber may stop
# or drop the monitor.
sub _on_close {
    my ($self, $reason) = @_;
    return unless $self->{running} && $self->{conn};
    my $record = $self->_connection_record('close',
        reason => _code_name(close_reason => $reason), reason_code => _number($reason));
    $self->{down_since} = $record->{time};
    $self->{attempts} = 0;
    $self->_after(0, sub {
        my ($self) = @_;
        $self->_deliver_record($record);
        return $self->stop unless $self->{reconnect};
        return unless $self->{running};    # a subscriber stopped it
        $self->_disconnect;
        $self->_retry_later;
    });
    return;
}

# Capped exponential backoff with jitter: attempt N waits between half
# and all of min(first * 2**(N-1), most) seconds, so that monitors that
# lost the same daemon do not all come back at the same instant.
sub _retry_later {
    my ($self) = @_;
    my ($first, $most) = @{$self->{backoff}};
    my $attempt = ++$self->{attempts};
    my $ceiling = $first * 2 ** ($attempt - 1);
    $ceiling = $most if $ceiling > $most;
    my $delay = $ceiling / 2 + rand($ceiling / 2);
    $self->_after($delay, sub {
        my ($self) = @_;
        $self->_probe(sub {
            my ($self, $why) = @_;
            if (!defined $why && $self->_connect) {
                my $down = Time::HiRes::time() - $self->{down_since};
                $self->_deliver_record($self->_connection_record('reconnect',
                    attempts => $attempt, down_seconds => 0 + sprintf('%.3f', $down)));
                $self->{attempts} = 0;
                return;
            }
            $self->_error("reconnecting, attempt $attempt: " . ($why // $self->{last_error}));
            $self->_retry_later;
        });
    });
    return;
}

# Opening a connection waits for the daemon's answer, and nothing in the
# process runs meanwhile: a daemon that accepts but does not answer (a
# stopped one, the very case keepalive reports) would hold the loop, and
# every other connection on it, until it answers.  So before a
# reconnection, a separate program opens one, under connect_timeout;
# $then->($self, undef) once it could, $then->($self, $why) when it could
# not.  Its answer comes through a pipe watched by the loop.
my $PROBE = <<'END_PROBE';
# Sys::Virt::Event::Monitor connection probe
open STDIN, '<', '/dev/null';
my $ok = eval { require Sys::Virt; Sys::Virt->new(@ARGV ? (uri => $ARGV[0]) : ()); 1 };
my $error = $@;
print $ok ? "ok\n"
    : (ref $error && eval { $error->message } || "$error") =~ s/\s+\z//r;
END_PROBE

sub _probe {
    my ($self, $then) = @_;
    my $limit = $self->{connect_timeout};
    return $then->($self, undef) unless $limit;
    my ($read, $write);
    my $pid = pipe($read, $write) ? fork : undef;
    return $then->($self, "cannot start a connection probe: $!") unless defined $pid;
    if ($pid == 0) {
        # only exec: this process shares the program's libvirt state
        close $read;
        open STDOUT, '>&', $write or POSIX::_exit(1);
        no warnings 'exec';
        exec $^X, (map { "-I$_" } grep { !ref } @INC), '-e', $PROBE,
             defined $self->{given_uri} ? $self->{given_uri} : ();
        POSIX::_exit(1);
    }
    close $write;
    my $answer = '';
    my $probe = $self->{probe} = { pid => $pid, fh => $read };
    my $weak = $self;
    Scalar::Util::weaken($weak);
    my $done = sub {
        my ($why) = @_;
        return unless $weak && $weak->{probe} && $weak->{probe} == $probe;
        $weak->_end_probe;
        $why = $weak->_cannot_connect($why) if defined $why;
        $then->($weak, $why);
    };
    $probe->{watch} = Sys::Virt::Event::add_handle(fileno $read,
        Sys::Virt::Event::HANDLE_READABLE(), sub {
            my $got = sysread $read, $answer, 4096, length $answer;
            return if $got;         # more to come, or interrupted
            return if !defined $got && $!{EINTR};
            $done->($answer eq "ok\n" ? undef
                    : length $answer ? $answer
                    : 'the connection probe ended without an answer');
        });
    $probe->{timer} = $self->_after($limit, sub {
        $done->("no answer from the daemon within $limit s");
    });
    return;
}

# Ends the probe under way, if any: no answer is waited for any more.
sub _end_probe {
    my ($self) = @_;
    my $probe = delete $self->{probe} or return;
    eval { Sys::Virt::Event::remove_handle($probe->{watch}) } if defined $probe->{watch};
    $self->_cancel_timer($probe->{timer}) if defined $probe->{timer};
    kill 'KILL', $probe->{pid};
    waitpid $probe->{pid}, 0;
    close $probe->{fh};
    return;
}

# Runs $code->($self) once, $seconds from now, from the registered
# loop; returns the timer, for _cancel_timer.  The timer holds the
# monitor weakly: a monitor dropped while it waits to reconnect is
# stopped, not kept alive by its own timer.
sub _after {
    my ($self, $seconds, $code) = @_;
    # a callback (on_error, close) may have stopped the monitor meanwhile
    return unless $self->{running};
    my $run = $self->{runs};
    my $weak = $self;
    Scalar::Util::weaken($weak);
    my $timer;
    $timer = Sys::Virt::Event::add_timeout(int($seconds * 1000), sub {
        # a cancelled timer is removed already; any other fires once, even
        # for a monitor gone without cancelling it
        return if $weak && !delete $weak->{timers}{$timer};
        Sys::Virt::Event::remove_timeout($timer);
        return unless $weak;
        $code->($weak) if $weak->{running} && $weak->{runs} == $run;
    });
    $self->{timers}{$timer} = 1;
    return $timer;
}

sub _cancel_timer {
    my ($self, $timer) = @_;
    eval { Sys::Virt::Event::remove_timeout($timer) } if delete $self->{timers}{$timer};
    return;
}

sub _cancel_timers {
    my ($self) = @_;
    $self->_cancel_timer($_) for keys %{$self->{timers}};
    return;
}

sub _deliver {
    my ($self, $name, @callback_args) = @_;
    my $record = $self->record($name, @callback_args);
    $self->_deliver_record($record);
    return 0;
}

# Hands the record to every subscription that wants it; a callback that
# dies is reported and the others still get the record.
sub _deliver_record {
    my ($self, $record) = @_;
    my $event = $record->{event};
    my $subs = $self->{wanting}{$event} //= [
        map { $self->{subscriptions}{$_} } grep { $self->{subscriptions}{$_}{events}{$event} }
        sort { $a <=> $b } keys %{$self->{subscriptions}}
    ];
    for my $sub (@$subs) {
        # a callback may have stopped the monitor, or unsubscribed
        last unless $self->{running};
        next unless $self->{subscriptions}{$sub->{id}};
        my $filter = $sub->{filter};
        next if %$filter && $record->{kind} ne 'connection'
                && grep { !defined $record->{$_} || $record->{$_} ne $filter->{$_} }
                        keys %$filter;
        eval { $sub->{callback}->($record); 1 }
            or Sys::Virt::Event::_report_error($@,
                   "Sys::Virt::Event::Monitor callback for '$event' events", 1);
    }
    return;
}

sub _error {
    my ($self, $message) = @_;
    return if $self->{quiet};
    if ($self->{on_error}) {
        eval { $self->{on_error}->($message); 1 }
            or Sys::Virt::Event::_report_error($@, 'Sys::Virt::Event::Monitor on_error', 1);
        return;
    }
    warn "Sys::Virt::Event::Monitor: $message\n";
    return;
}

sub _error_text {
    my ($error) = @_;
    my $text = ref $error && eval { $error->can('message') } ? $error->message : "$error";
    $text =~ s/\s+\z//;
    return $text;
}

1;

__END__

=head1 NAME

Sys::Virt::Event::Monitor - every libvirt event of a connection, as plain
records, kept across daemon restarts

=head1 SYNOPSIS

  use Sys::Virt::Event;
  use Sys::Virt::Event::Monitor;

  Sys::Virt::Event::register_default();     # or any loop of this distribution

  my $monitor = Sys::Virt::Event::Monitor->new(uri => 'qemu:///system');
  $monitor->subscribe('all', sub {
      my ($event) = @_;
      print Sys::Virt::Event::Monitor->describe($event), "\n";
  });
  $monitor->subscribe([qw(lifecycle reboot)], \&on_web1, name => 'web1');
  $monitor->start;

  Sys::Virt::Event::run_default() while 1;

=head1 DESCRIPTION

A monitor watches one libvirt connection for the events its
subscriptions ask for and hands each one, as a hash of plain values, to
every callback subscribed to it.  It is what L<virt-events> is built on.

=over 4

=item *

B<Every event type>: the 27 domain events of Sys::Virt 9.0.0, network
lifecycle, storage pool lifecycle and refresh, node device lifecycle and
update, secret lifecycle and value change, and two of its own about the
connection (C<close> and C<reconnect>).  See L</EVENTS>.

=item *

B<Any number of callbacks per event>: libvirt is asked once per event
type and connection, and the monitor fans each event out to the
subscriptions that want it.  (Registering the same event twice on one
connection through Sys::Virt fails with "event callback already
tracked": its callbacks are one C function per event type.)

=item *

B<The connection is kept>: keepalive is turned on; when the connection
closes, for whatever reason, a C<close> event is delivered, the monitor
connects again with capped exponential backoff and jitter (and, while
the daemon does not answer, without blocking the loop), registers every
event again, and delivers a C<reconnect> event: events of the time
in between are lost, and a consumer that keeps state should read it
afresh.

=item *

B<A callback cannot hurt the others>: one that dies is reported through
C<$Sys::Virt::Event::DIED>, or a warning, as L<Sys::Virt::Event/ERROR
HANDLING> describes, and the event still goes to the other callbacks.

=item *

B<Any loop>: the monitor's only timers (backoff, and the C<close> event
and the work deferred from libvirt's close callback) go through
L<Sys::Virt::Event/add_timeout>, so it runs on whichever loop is
registered: libvirt's default loop, L<Sys::Virt::Event::AnyEvent>,
L<Sys::Virt::Event::EV> or another.  Register the loop before starting
the monitor, as libvirt requires before any connection is opened.  The
monitor does not run the loop; the program does.  Nothing waits busily:
between events the monitor has no timer at all.

=back

=head1 METHODS

=head2 Sys::Virt::Event::Monitor->new(%options)

Makes a monitor, not yet connected.  Options:

=over 4

=item uri => $uri

The libvirt URI; undef (the default) for libvirt's default connection.

=item reconnect => $bool

Connect again after the connection closed (default true).  When false,
a closed connection stops the monitor after its C<close> event.

=item keepalive => [$interval, $count]

Passed to C<set_keep_alive> on each new connection (default C<[5, 3]>:
a daemon that does not answer for about 20 seconds closes the connection
with reason C<keepalive>).  Undef leaves libvirt's own setting.  Drivers
without keepalive (C<test:///>, the local ones) ignore it.

=item backoff => [$first, $most]

Seconds before connecting again (default C<[0.5, 30]>).  Attempt I<N>
waits a random time between half and all of
C<min($first * 2 ** (N - 1), $most)>.

=item connect_timeout => $seconds

How long a reconnection may wait for the daemon's answer (default 10).
Opening a connection is a call that waits, and nothing else in the
process runs meanwhile: a daemon that accepts connections but does not
answer (stopped, or hung, the case keepalive reports) would hold the
loop, and every other connection on it, until it answers.  So before
each reconnection a separate perl (C<$^X>, with this C<@INC>) opens a
connection to the same URI, and the monitor connects only once that
one could; one that has not answered in time is killed, and the attempt
counts as failed.  This costs a process start per attempt (tens of
milliseconds), never per event.  0 or undef connects directly.  The
first connection, in L</$monitor-E<gt>start>, is made directly: start
returns only once it is made.  A URI whose connection asks questions
(a password) gets no terminal in that probe: use 0 for it.

=item on_error => sub { my ($message) = @_; ... }

Called with a message when something goes wrong that does not stop the
monitor: a reconnection attempt failed, an event type the daemon does
not know (said once per type; the others are watched, as virsh does), a
deregistration failed.  The default warns.

=back

Unknown options and bad values croak.

=head2 $monitor->subscribe($events, $callback, %filter)

Subscribes C<< $callback->($event) >> to C<$events>: an event name, a
reference to an array of names, or C<'all'>.  Returns the subscription's
id, a positive integer.  It may be called before or after L</$monitor-E<gt>start>;
libvirt is asked for an event type the first time a subscription wants
it.  Filters, which apply to events about an object (not to C<close> and
C<reconnect>):

=over 4

=item name => $name

Only events about the object of that name (UTF-8 bytes, as libvirt
gives them).  Secrets have no name: use C<uuid>.

=item uuid => $uuid

Only events about the object with that UUID (lower case, with dashes, as
libvirt prints it).  Node devices have no UUID: use C<name>.

=back

Objects are matched by name and UUID in the monitor, not through
libvirt's per-object registration: the filter then holds across
reconnections and for an object that does not exist yet or is defined
again.

The callback gets one record, shared by the callbacks of that event: do
not change it.  It runs inside libvirt's event dispatch: it may call
libvirt (look up the domain, start another), but should not block.

=head2 $monitor->unsubscribe($id)

Removes a subscription; libvirt's registration of an event type goes
when no subscription wants it any more.  An unknown id croaks.

=head2 $monitor->start

Connects and registers what the subscriptions want.  Returns the
monitor.  When the first connection fails, it croaks if C<reconnect> is
false; otherwise it reports the failure through C<on_error> and keeps
trying, as after a close (L</$monitor-E<gt>is_connected, $monitor-E<gt>is_running> tells which).  Opening a
connection waits for libvirt: a daemon that does not answer blocks it.
Starting a monitor that is running croaks.

=head2 $monitor->stop

Deregisters every event, drops the connection and cancels the
monitor's timers: once the loop has run the frees libvirt asked for, it
has nothing of the monitor's left (L<Sys::Virt::Event::AnyEvent/is_idle>
is true when nothing else uses it).  The subscriptions stay, for a later
L</$monitor-E<gt>start>.  Stopping a stopped monitor does nothing; dropping the last
reference to a running monitor stops it.  It may be called from a
callback: the callbacks after it then get nothing, not even the event
being delivered.

=head2 $monitor->uri

The URI of the connection (libvirt's canonical form, once connected).

=head2 $monitor->connection

The current L<Sys::Virt> connection, or undef while disconnected.  Keep
no reference to it: the monitor drops it when it closes.

=head2 $monitor->is_connected, $monitor->is_running

Whether a connection is open; whether the monitor is started (connected
or trying to be).

=head2 $monitor->registered_events

The names of the event types libvirt has been asked for on the current
connection, sorted.

=head2 Sys::Virt::Event::Monitor->event_names

The 34 libvirt event names, in the order of L</EVENTS>, then C<close>
and C<reconnect>.

=head2 $monitor->record($name, @arguments)

The record for an event of type C<$name> from the arguments Sys::Virt
passes its callback (the connection, the object, then the event's own).
This is what the monitor does with every event; it is public so that a
program can make records from its own Sys::Virt callbacks, and so that
event types a test hypervisor cannot produce can be tested.  Also a
class method (C<uri> is then undef).  An unknown name croaks.

=head2 Sys::Virt::Event::Monitor->describe($record)

One line of text for a record, worded like C<virsh event>:

  event 'lifecycle' for domain 'web1': Stopped Destroyed
  event 'io-error' for domain 'web1': src_path=/var/lib/a.img dev_alias=virtio-disk0 action=pause
  event 'pool-refresh' for pool 'default'
  connection close: reason=eof
  connection reconnect: attempts=3 down_seconds=2.514

Lifecycle events read as virsh prints them (the type, then for domains
the detail); the other arguments as C<field=value> in the order Sys::Virt
passes them, nested hashes and arrays as C<field.key=value> and
C<field.0.key=value> (a key quoted as a value is), codes by name (by
number when libvirt added the code after this module), C<-> for a
missing value (a value that is C<-> is quoted); an event with no
argument, or an empty hash of parameters, has nothing after the name.
The object's name (a secret's UUID) is in single quotes; a value is as
it is when it is made only of letters, marks, digits, punctuation and
symbols of any script other than quotes and backslash, and otherwise in
double quotes.
In quotes, C<\\>, C<\">, C<\'>, C<\t>, C<\n> and C<\r> stand for those
characters, a space is itself, and any other character is C<\x> and two
hexadecimal digits per byte of its UTF-8 form: a name can neither end
the line nor forge a field.

=head2 Sys::Virt::Event::Monitor->quote($value)

C<$value> as one word of such a line: as it is, or in double quotes with
the escapes above.  L<virt-events> writes URIs this way.  Values are
bytes, as libvirt gives them (UTF-8); a string with characters above
U+00FF is taken as its UTF-8 form.

=head1 EVENTS

Every record has these fields:

=over 4

=item time

When the monitor received it, in seconds since the epoch (fractional).

=item uri

The connection's URI.

=item kind

C<domain>, C<network>, C<pool>, C<nodedev>, C<secret>, or C<connection>
for the monitor's own events.

=item event

The event's name, as below.

=item name, uuid

The object's name and UUID; undef where the kind has none (a secret's
name, a node device's UUID) and for C<connection> events.

=back

A field named after a code (C<type>, C<detail>, C<action>, ...) holds the
name C<virsh event> prints for it, and the field with C<_code> appended
holds libvirt's number; the name is undef for a code libvirt added after
this module.  Strings are UTF-8 bytes, as libvirt gives them, and undef
where libvirt gives none.  The event's own fields:

=head2 Domain events

=over 4

=item lifecycle

C<type> (C<Defined>, C<Undefined>, C<Started>, C<Suspended>, C<Resumed>,
C<Stopped>, C<Shutdown>, C<PMSuspended>, C<Crashed>), C<type_code>,
C<detail> (per type, e.g. C<Booted>, C<Destroyed>, C<Finished after
guest request>), C<detail_code>.

=item reboot, control-error

None.

=item rtc-change

C<utc_offset> (seconds).

=item watchdog

C<action> (C<none>, C<pause>, C<reset>, C<poweroff>, C<shutdown>,
C<debug>, C<inject-nmi>), C<action_code>.

=item io-error

C<src_path>, C<dev_alias>, C<action> (C<none>, C<pause>, C<report>),
C<action_code>.

=item io-error-reason

As C<io-error>, and C<reason> (a string, e.g. C<enospc>).

=item graphics

C<phase> (C<connect>, C<initialize>, C<disconnect>), C<phase_code>;
C<local> and C<remote>, each a hash of C<family> (C<IPv4>, C<IPv6>,
C<unix>), C<family_code>, C<node>, C<service>; C<auth_scheme>; C<subject>,
an array of hashes of C<type> and C<name>.

=item block-job

C<path>, C<type> (C<Unknown job>, C<Block Pull>, C<Block Copy>, C<Block
Commit>, C<Active Block Commit>, C<Backup>), C<type_code>, C<status>
(C<completed>, C<failed>, C<canceled>, C<ready>), C<status_code>.

=item block-job-2

As C<block-job>, with C<disk> (the target, e.g. C<vda>) in place of
C<path>.

=item disk-change

C<old_src_path>, C<new_src_path>, C<dev_alias>, C<reason> (C<changed>,
C<dropped>), C<reason_code>.

=item tray-change

C<dev_alias>, C<reason> (C<opened>, C<closed>), C<reason_code>.

=item pm-wakeup, pm-suspend, pm-suspend-disk

C<reason> (a code; libvirt names none).

=item balloon-change

C<actual> (KiB).

=item device-added, device-removed, device-removal-failed

C<dev_alias>.

=item tunable, job-completed

C<params>: a hash of the typed parameters.

=item agent-lifecycle

C<state> (C<unknown>, C<connected>, C<disconnected>), C<state_code>,
C<reason> (C<unknown>, C<domain started>, C<channel event>),
C<reason_code>.

=item migration-iteration

C<iteration>.

=item metadata-change

C<type> (C<description>, C<title>, C<element>), C<type_code>, C<nsuri>
(for C<element>).

=item block-threshold

C<dev>, C<path>, C<threshold>, C<excess> (bytes).

=item memory-failure

C<recipient> (C<hypervisor>, C<guest>), C<recipient_code>, C<action>
(C<ignore>, C<inject>, C<fatal>, C<reset>), C<action_code>, C<flags>, and
its bits as C<action_required> and C<recursive> (0 or 1).

=item memory-device-size-change

C<alias>, C<size> (KiB).

=back

=head2 Other objects

=over 4

=item network-lifecycle

C<type> (C<Defined>, C<Undefined>, C<Started>, C<Stopped>), C<type_code>,
C<detail_code>.

=item pool-lifecycle

C<type> (C<Defined>, C<Undefined>, C<Started>, C<Stopped>, C<Created>,
C<Deleted>), C<type_code>, C<detail_code>.

=item pool-refresh

None.

=item nodedev-lifecycle

C<type> (C<Created>, C<Deleted>, C<Defined>, C<Undefined>), C<type_code>,
C<detail_code>.

=item nodedev-update

None.

=item secret-lifecycle

C<type> (C<Defined>, C<Undefined>), C<type_code>, C<detail_code>.

=item secret-value-changed

None.

=back

=head2 The connection

=over 4

=item close

The connection closed: C<reason> (C<error>, C<eof>, C<keepalive>,
C<client>), C<reason_code>.  Events stop until C<reconnect>.  It is
delivered on the loop's turn after libvirt reported the close, outside
libvirt's close callback, so that its callbacks may stop or drop the
monitor (from within, deregistering would wait forever on the lock
libvirt holds there).  C<time> is when libvirt reported it.

=item reconnect

Connected and registered again after a close: C<attempts> (how many
tries it took) and C<down_seconds> (since the close).  Events in between
are lost.

=back

=head1 SEE ALSO

L<virt-events>, L<Sys::Virt::Event>, L<Sys::Virt>, C<virsh event>,
C<virsh net-event>, C<virsh pool-event>, C<virsh nodedev-event>, C<virsh
secret-event>.

=head1 AUTHOR

The Sys-Virt-Event developers.

=head1 COPYRIGHT AND LICENSE

This library is free software; you can redistribute it and/or modify it
under the same terms as Perl itself.

=cut

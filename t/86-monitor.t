use strict;
use warnings;

# Sys::Virt::Event::Monitor against libvirt's test driver
# (test:///default, in this process), on every loop kind of t/lib/Loops.pm:
# every event the driver emits arrives as a record with the right fields;
# any number of callbacks per event (which Sys::Virt alone cannot do);
# a callback that dies hurts no other; filters, unsubscribe, stop and a
# second start; stop from inside a callback; the secret events the driver
# refuses; bad input; no busy waiting; a URI that cannot connect, with and
# without reconnection.
#
# libvirt takes one event loop per process, so each case runs in a child
# of its own under a time limit, registers the loop, runs and reports its
# checks on lines of its own, which this process turns into test results
# (t/lib/ChildChecks.pm).
# After every case the child checks that the loop is left idle (where the
# loop can say so) and that nothing warned.  Formatting of the event types
# the test driver cannot emit is in t/87-monitor-formatting.t.

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Temp ();
use Scalar::Util ();
use Test::More;
use Time::HiRes ();

use TestUtil qw(have_sys_virt);
use ChildChecks qw(check check_is check_like check_skip show checks_in_child);
use Loops;

BEGIN {
    plan skip_all => 'Sys::Virt is not installed' unless have_sys_virt();
}

use DriverEvents;
use Sys::Virt::Event::Monitor;

my $URI = 'test:///default';
my $UUID = qr/\A[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\z/;
# A URI that cannot connect, at once and quietly (no daemon is started
# for a socket given by path).
my $NO_SOCKET = 'test+unix:///default?socket=/nonexistent/sve-sock';
my $NO_FILE = 'test:///nonexistent/sve-no-such-file.xml';
my $TMP = File::Temp::tempdir(CLEANUP => 1);
# Where croaks in this file are reported: the caller's line, not the module's.
my $HERE = qr/ at \Q${\ __FILE__}\E line \d+\.?\z/;
my @WARNINGS;    # in a child

my @CASES = (
    [ 'every event of the test driver', \&case_all_events ],
    [ 'several callbacks per event',    \&case_fan_out ],
    [ 'a callback dies',                \&case_callback_dies ],
    [ 'filters and unsubscribe',        \&case_filters ],
    [ 'stop, and start again',          \&case_stop_start ],
    [ 'stop from a callback',           \&case_stop_in_callback ],
    [ 'secret events are refused',      \&case_secrets ],
    [ 'bad input',                      \&case_bad_input ],
    [ 'no busy waiting',                \&case_idle_cpu ],
    [ 'a URI that cannot connect',      \&case_cannot_connect ],
);

# ==========================================================================
# The parent: every case on every loop kind
# ==========================================================================

my $started = Time::HiRes::time();
for my $kind (Loops::kinds()) {
    my $why = Loops::missing($kind);
    SKIP: {
        skip("$kind: $why", 1) if $why;
        note("$kind: " . Loops::kind_info($kind)->{what});
        run_case($kind, @$_) for @CASES;
    }
}
note(sprintf 'all cases on all loops: %.1f s', Time::HiRes::time() - $started);
done_testing;

sub run_case {
    my ($kind, $name, $code) = @_;
    my $t = "$kind: $name";
    checks_in_child($t, sub { child($kind, $code) }, 20 * Loops::patience());
    return;
}

# ==========================================================================
# The child: one case on one loop
# ==========================================================================

sub child {
    my ($kind, $code) = @_;
    $SIG{__WARN__} = sub { push @WARNINGS, $_[0] };
    my $loop = Loops->start($kind);
    $code->($loop);
    $loop->drain;
    if ($loop->introspects) {
        check($loop->is_idle, 'afterwards nothing is left in the loop', $loop->describe);
    }
    check_is(join('', @WARNINGS), '', 'nothing warned');
    return;
}

# -- what the cases share ---------------------------------------------------

sub conn { return Sys::Virt->new(uri => $URI) }

sub domain { return $_[0]->get_domain_by_name($_[1] // 'test') }

# A monitor whose on_error messages go to @$errors.
sub monitor {
    my ($errors, %opt) = @_;
    return Sys::Virt::Event::Monitor->new(uri => $URI,
        on_error => sub { push @$errors, $_[0] }, %opt);
}

# The error of a block, on one line, or '' when it did not die.
sub error_of (&) {
    my ($code) = @_;
    local $@;
    return eval { $code->(); 1 } ? '' : do { (my $e = "$@") =~ s/\n+\z//; $e };
}


sub check_croak {
    my ($code, $re, $name) = @_;
    my $error = &error_of($code);
    return check($error =~ $re && $error =~ $HERE, "$name: croaks", "     got: '$error'",
                 "expected: $re, reported at the caller");
}

# Suspends and resumes domain test: two lifecycle events.
sub bounce {
    my ($conn) = @_;
    my $dom = domain($conn);
    $dom->suspend;
    $dom->resume;
    return;
}

sub types { return join ' ', map { $_->{type} // 'undef' } @_ }

# ==========================================================================
# The cases
# ==========================================================================

# Every step of t/lib/DriverEvents.pm, in order, through one subscription
# to 'all': each expected record arrives, with its fields and the common
# ones, and nothing else.
sub case_all_events {
    my ($loop) = @_;
    my (@errors, @records);
    my $m = monitor(\@errors);
    $m->subscribe('all', sub { push @records, $_[0] });
    check_is($m->start, $m, 'start returns the monitor');
    check($m->is_connected && $m->is_running, 'connected and running');
    check_is($m->uri, $URI, 'uri is the connection\'s');
    my $conn = conn();
    my (%seen, $bad_steps);
    for my $step (DriverEvents::steps($TMP)) {
        my ($what, $action, @expected) = @$step;
        @records = ();
        my $before = Time::HiRes::time();
        $action->($conn);
        my $arrived = $loop->run_until(sub { @records >= @expected }, 5 * Loops::patience());
        my $after = Time::HiRes::time();
        my @wrong;
        push @wrong, sprintf('%d records of %d arrived', scalar @records, scalar @expected)
            unless $arrived && @records == @expected;
        for my $i (0 .. $#expected) {
            my $record = $records[$i] or last;
            my $want = $expected[$i];
            push @wrong, map { "record $i: $_" } DriverEvents::mismatches($record, $want);
            push @wrong, "record $i: time $record->{time} not between $before and $after"
                unless defined $record->{time} && $record->{time} >= $before - 0.001
                       && $record->{time} <= $after + 0.001;
            push @wrong, "record $i: uri " . show($record->{uri}) unless ($record->{uri} // '') eq $URI;
            if ($record->{kind} eq 'nodedev') {
                push @wrong, "record $i: a node device has no uuid, got $record->{uuid}"
                    if defined $record->{uuid};
            } else {
                push @wrong, "record $i: uuid " . show($record->{uuid})
                    unless defined $record->{uuid} && $record->{uuid} =~ $UUID;
            }
            push @wrong, "record $i: describe gives no line"
                unless Sys::Virt::Event::Monitor->describe($record) =~ /\A[^\n]+\z/;
            $seen{$record->{event}}++ unless DriverEvents::mismatches($record, $want);
        }
        $bad_steps++ if @wrong;
        check(!@wrong, "$what: " . join(', ', map {
                  Sys::Virt::Event::Monitor->describe($_) } @records),
              @wrong);
    }
    my @missing = grep { !$seen{$_} } @DriverEvents::EMITTED;
    check(!@missing, 'every type the test driver emits was seen (' . join(', ', @DriverEvents::EMITTED) . ')',
          "not seen: @missing");
    @records = ();
    $loop->run_for(0.1);
    check_is(scalar @records, 0, 'no record more than expected');
    check_is(join("\n", @errors), join("\n",
        map { "cannot watch '$_' events on $URI: this function is not supported by "
              . 'the connection driver: virConnectSecretEventRegisterAny' }
            qw(secret-lifecycle secret-value-changed)),
        'on_error: only the two secret types the test driver refuses');
    $m->stop;
    return;
}

# Two callbacks on one event both get every record (the same one), a
# third filtered to another name gets none; Sys::Virt alone refuses a
# second registration on one connection.
sub case_fan_out {
    my ($loop) = @_;
    my (@errors, @one, @two, @other);
    my $m = monitor(\@errors);
    my $id1 = $m->subscribe('lifecycle', sub { push @one, $_[0] });
    my $id2 = $m->subscribe('lifecycle', sub { push @two, $_[0] });
    my $id3 = $m->subscribe('lifecycle', sub { push @other, $_[0] }, name => 'sve-no-such-domain');
    check(($id1 // '') =~ /\A[1-9][0-9]*\z/ && $id2 > $id1 && $id3 > $id2,
          'subscribe returns growing positive ids', "ids: $id1 $id2 $id3");
    $m->start;
    check_is(join(',', $m->registered_events), 'lifecycle', 'libvirt is asked once for lifecycle');
    my $conn = conn();
    bounce($conn);
    $loop->run_until(sub { @one >= 2 && @two >= 2 }, 5 * Loops::patience());
    $loop->run_for(0.05);
    check_is(types(@one), 'Suspended Resumed', 'the first callback gets both events');
    check_is(types(@two), 'Suspended Resumed', 'the second callback gets both events');
    check(@one == 2 && $one[0] == $two[0] && $one[1] == $two[1],
          'both get the same record');
    check_is(scalar @other, 0, 'the callback filtered to another name gets none');
    check_is(join("\n", @errors), '', 'on_error: nothing');
    $m->stop;

    # Through Sys::Virt alone, on one connection
    my $lifecycle = Sys::Virt::Domain::EVENT_ID_LIFECYCLE();
    my $first = eval { $conn->domain_event_register_any(undef, $lifecycle, sub { }) };
    my $second = eval { $conn->domain_event_register_any(undef, $lifecycle, sub { }) };
    my $error = $@;
    if (!defined $first) {
        check(0, 'Sys::Virt: a first registration works', "$error");
    } elsif (defined $second) {
        check_skip('Sys::Virt: a second registration of one event on one connection fails',
                   'this libvirt accepts it');
        $conn->domain_event_deregister_any($second);
    } else {
        check_like("$error", qr/event callback already tracked/,
                   'Sys::Virt: a second registration of one event on one connection fails '
                   . '(why the monitor fans out)');
    }
    $conn->domain_event_deregister_any($first) if defined $first;
    return;
}

# A callback that dies: reported through $Sys::Virt::Event::DIED, the
# later callbacks still get the record, the next events still arrive.
sub case_callback_dies {
    my ($loop) = @_;
    my (@errors, @died, @dier, @after);
    local $Sys::Virt::Event::DIED = sub { push @died, [@_] };
    my $m = monitor(\@errors);
    $m->subscribe('lifecycle', sub { push @dier, $_[0]; die "sve test: oops\n" });
    $m->subscribe('lifecycle', sub { push @after, $_[0] });
    $m->start;
    my $conn = conn();
    domain($conn)->suspend;
    $loop->run_until(sub { @after >= 1 }, 5 * Loops::patience());
    check_is(types(@after), 'Suspended', 'the callback after the one that died gets the record');
    check_is(scalar @died, 1, '$Sys::Virt::Event::DIED is called once');
    check_is($died[0][0] // '', "sve test: oops\n", '... with the error');
    check_like($died[0][1], qr/Sys::Virt::Event::Monitor callback for 'lifecycle' events/,
               '... and where it happened');
    domain($conn)->resume;
    $loop->run_until(sub { @after >= 2 }, 5 * Loops::patience());
    check_is(types(@after), 'Suspended Resumed', 'the next event still arrives');
    check_is(types(@dier), 'Suspended Resumed', 'the callback that died is called again');
    check_is(scalar @died, 2, 'its second death is reported too');
    check($m->is_connected && $m->is_running, 'the monitor is still connected');
    check_is(join("\n", @errors), '', 'on_error: nothing');
    $m->stop;
    return;
}

# Filters by name and by uuid; unsubscribe stops delivery, and libvirt's
# registration goes with the last subscription for the event.
sub case_filters {
    my ($loop) = @_;
    my (@errors, @all, @by_name, @by_uuid, @meta);
    my $new_uuid = 'c7a5fdbd-cdaf-9455-926a-d65c16db1809';    # DriverEvents' sve-new
    my $m = monitor(\@errors);
    my $all = $m->subscribe('lifecycle', sub { push @all, $_[0] });
    my $name = $m->subscribe(['lifecycle'], sub { push @by_name, $_[0] }, name => 'test');
    my $uuid = $m->subscribe('lifecycle', sub { push @by_uuid, $_[0] }, uuid => $new_uuid);
    $m->subscribe('metadata-change', sub { push @meta, $_[0] });
    $m->start;
    check_is(join(',', $m->registered_events), 'lifecycle,metadata-change', 'registered events');
    my $conn = conn();
    my $define = (grep { $_->[0] eq 'define domain sve-new' } DriverEvents::steps($TMP))[0][1];
    my $undefine = (grep { $_->[0] eq 'undefine domain sve-new' } DriverEvents::steps($TMP))[0][1];
    bounce($conn);
    $define->($conn);
    $undefine->($conn);
    $loop->run_until(sub { @all >= 4 }, 5 * Loops::patience());
    $loop->run_for(0.05);
    check_is(join(' ', map { "$_->{name}:$_->{type}" } @all),
             'test:Suspended test:Resumed sve-new:Defined sve-new:Undefined',
             'unfiltered: all four');
    check_is(join(' ', map { "$_->{name}:$_->{type}" } @by_name), 'test:Suspended test:Resumed',
             'name filter: the events of domain test only');
    check_is(join(' ', map { "$_->{name}:$_->{type}" } @by_uuid), 'sve-new:Defined sve-new:Undefined',
             'uuid filter: the events of the domain of that uuid only');

    check_is(scalar($m->unsubscribe($name)), undef, 'unsubscribe returns nothing');
    check_is(join(',', $m->registered_events), 'lifecycle,metadata-change',
             'lifecycle is still registered: others want it');
    @all = @by_name = @by_uuid = ();
    bounce($conn);
    $loop->run_until(sub { @all >= 2 }, 5 * Loops::patience());
    $loop->run_for(0.05);
    check_is(types(@all), 'Suspended Resumed', 'the others still get events');
    check_is(scalar @by_name, 0, 'the unsubscribed callback gets none');

    $m->unsubscribe($_) for $all, $uuid;
    check_is(join(',', $m->registered_events), 'metadata-change',
             'the last lifecycle subscription gone, lifecycle is no longer registered');
    @all = ();
    bounce($conn);
    domain($conn)->set_metadata(Sys::Virt::Domain::METADATA_DESCRIPTION(), 'filters', undef, undef, 0);
    $loop->run_until(sub { @meta >= 1 }, 5 * Loops::patience());
    $loop->run_for(0.05);
    check_is(scalar(@all) + scalar(@by_uuid), 0, 'no lifecycle record after that');
    check_is(join(' ', map { $_->{type} } @meta), 'description', 'the other event still arrives');
    check_like(error_of { $m->unsubscribe($name) }, qr/\ASys::Virt::Event::Monitor->unsubscribe: no subscription \Q$name\E /,
               'unsubscribing twice croaks');
    check_is(join("\n", @errors), '', 'on_error: nothing');
    $m->stop;
    return;
}

# stop: nothing registered, not connected, the loop idle; a monitor
# started again gets events again, once each.
sub case_stop_start {
    my ($loop) = @_;
    my (@errors, @got);
    my $m = monitor(\@errors);
    $m->subscribe('all', sub { push @got, $_[0] });
    $m->start;
    my $conn = conn();
    domain($conn)->suspend;
    $loop->run_until(sub { @got >= 1 }, 5 * Loops::patience());
    check_is(types(@got), 'Suspended', 'an event before stop');

    check_is(scalar($m->stop), undef, 'stop returns nothing');
    check_is(join(',', $m->registered_events), '', 'stopped: no event registered');
    check(!$m->is_connected, 'stopped: not connected');
    check(!$m->is_running, 'stopped: not running');
    check(!defined $m->connection, 'stopped: no connection');
    $loop->drain;
    if ($loop->introspects) {
        check($loop->is_idle, 'stopping leaves the loop idle', $loop->describe);
    } else {
        check_skip('stopping leaves the loop idle', 'the loop cannot list its watches and timers');
    }
    check_is(error_of { $m->stop }, '', 'stopping again does nothing');

    @got = ();
    domain($conn)->resume;
    $loop->run_for(0.2);
    check_is(scalar @got, 0, 'stopped: no event arrives');

    check_is($m->start, $m, 'started again');
    check($m->is_connected && $m->is_running, 'connected and running again');
    check(scalar(grep { $_ eq 'lifecycle' } $m->registered_events), 'lifecycle registered again');
    bounce($conn);
    $loop->run_until(sub { @got >= 2 }, 5 * Loops::patience());
    $loop->run_for(0.1);
    check_is(types(@got), 'Suspended Resumed', 'events arrive again, once each');
    $m->stop;
    $loop->drain;
    if ($loop->introspects) {
        check($loop->is_idle, 'stopped again: the loop is idle', $loop->describe);
    }
    check_is(join("\n", grep { !/secret/ } @errors), '', 'on_error: nothing but the secret types');
    return;
}

# stop called from a callback: no crash or hang, no later event.
sub case_stop_in_callback {
    my ($loop) = @_;
    my (@errors, @first, @later);
    my $m = monitor(\@errors);
    my $weak = $m;
    Scalar::Util::weaken($weak);
    $m->subscribe('lifecycle', sub { push @first, $_[0]; $weak->stop });
    $m->subscribe(['metadata-change', 'lifecycle'], sub { push @later, $_[0] });
    $m->start;
    my $conn = conn();
    bounce($conn);
    domain($conn)->set_metadata(Sys::Virt::Domain::METADATA_TITLE(), 'stop', undef, undef, 0);
    $loop->run_until(sub { @first >= 1 }, 5 * Loops::patience());
    $loop->run_for(0.2);
    check_is(types(@first), 'Suspended', 'the callback that stops gets the first event only');
    check(!grep({ $_->{event} eq 'metadata-change' || ($_->{type} // '') eq 'Resumed' } @later),
          'no later event is delivered', map { Sys::Virt::Event::Monitor->describe($_) } @later);
    check(!$m->is_running && !$m->is_connected, 'the monitor is stopped');
    check_is(join(',', $m->registered_events), '', 'nothing registered');
    check_is(join("\n", @errors), '', 'on_error: nothing');
    return;
}

# test:///default refuses the secret events: on_error is told once per
# type, the other types still work.
sub case_secrets {
    my ($loop) = @_;
    my (@errors, @got, @secret);
    my $m = monitor(\@errors);
    $m->subscribe([qw(secret-lifecycle secret-value-changed)], sub { push @secret, $_[0] });
    $m->subscribe('lifecycle', sub { push @got, $_[0] });
    $m->start;
    check($m->is_connected, 'the monitor connects');
    check_is(join(',', $m->registered_events), 'lifecycle', 'registered: lifecycle only');
    check_is(scalar @errors, 2, 'on_error is told twice');
    for my $type (qw(secret-lifecycle secret-value-changed)) {
        check_is(scalar(grep { /\Acannot watch '\Q$type\E' events on \Q$URI\E: .*not supported/ } @errors), 1,
                 "on_error: once about $type, naming the URI and the reason");
    }
    bounce(conn());
    $loop->run_until(sub { @got >= 2 }, 5 * Loops::patience());
    check_is(types(@got), 'Suspended Resumed', 'lifecycle events arrive');

    $m->subscribe('secret-lifecycle', sub { });
    $m->stop;
    $m->start;
    check_is(scalar @errors, 2, 'another subscription, stop and start: on_error is not told again');
    check_is(scalar @secret, 0, 'no secret record');
    $m->stop;
    return;
}

# Bad input croaks, naming the method and the problem, and leaves nothing
# behind.
sub case_bad_input {
    my ($loop) = @_;
    my $new = 'Sys::Virt::Event::Monitor->new';
    check_croak(sub { Sys::Virt::Event::Monitor->new(uri => $URI, colour => 'red') },
                qr/\A\Q$new\E: unknown option 'colour'/, 'new with an unknown option');
    for my $ka ([0, 3], [5], [5, 3, 1], [1.5, 3], [5, -1], 'x', {}) {
        check_croak(sub { Sys::Virt::Event::Monitor->new(keepalive => $ka) },
                    qr/\A\Q$new\E: keepalive must be undef or \[interval, count\]/,
                    'new with keepalive ' . (ref $ka eq 'ARRAY' ? "[@$ka]" : show($ka)));
    }
    for my $b ([0, 1], [-1, 1], [2, 1], [1], [1, 2, 3], ['x', 1], [undef, 1], 1, undef) {
        check_croak(sub { Sys::Virt::Event::Monitor->new(backoff => $b) },
                    qr/\A\Q$new\E: backoff must be \[first, most\]/,
                    'new with backoff ' . (ref $b eq 'ARRAY' ? '[' . join(', ', map { show($_) } @$b) . ']' : show($b)));
    }
    for my $t (-1, 'x', '1e3') {
        check_croak(sub { Sys::Virt::Event::Monitor->new(connect_timeout => $t) },
                    qr/\A\Q$new\E: connect_timeout must be a positive number of seconds, or 0 or undef/,
                    'new with connect_timeout ' . show($t));
    }
    check_is(error_of { Sys::Virt::Event::Monitor->new(connect_timeout => $_) }, '',
             'new with connect_timeout ' . show($_) . ' is fine') for 0, undef, 2.5;
    check_croak(sub { Sys::Virt::Event::Monitor->new(on_error => 'warn') },
                qr/\A\Q$new\E: on_error must be a code reference/, 'new with a non-code on_error');
    check_is(error_of { Sys::Virt::Event::Monitor->new(keepalive => undef, backoff => [0.05, 0.05]) }, '',
             'new with keepalive undef and backoff [0.05, 0.05] is fine');

    my @errors;
    my $m = monitor(\@errors);
    my $sub = 'Sys::Virt::Event::Monitor->subscribe';
    check_croak(sub { $m->subscribe('sve-nothing', sub { }) },
                qr/\A\Q$sub\E: unknown event type 'sve-nothing' \(see Sys::Virt::Event::Monitor->event_names\)/,
                'subscribe with an unknown event name');
    check_croak(sub { $m->subscribe([qw(lifecycle reboot sve-nothing)], sub { }) },
                qr/\A\Q$sub\E: unknown event type 'sve-nothing'/,
                'subscribe with known names and an unknown one');
    check_croak(sub { $m->subscribe(undef, sub { }) },
                qr/\A\Q$sub\E: unknown event type 'undef'/, 'subscribe with an undefined name');
    check_croak(sub { $m->subscribe([], sub { }) },
                qr/\A\Q$sub\E: needs one or more event names, or 'all'/, 'subscribe with no names');
    for my $cb ('main::nothing', undef, [], \'code') {
        check_croak(sub { $m->subscribe('lifecycle', $cb) },
                    qr/\A\Q$sub\E: the callback must be a code reference/,
                    'subscribe with callback ' . (ref $cb ? ref($cb) . ' ref' : show($cb)));
    }
    check_croak(sub { $m->subscribe('lifecycle', sub { }, domain => 'test') },
                qr/\A\Q$sub\E: unknown filter 'domain' \(name or uuid\)/, 'subscribe with an unknown filter');
    check_croak(sub { $m->subscribe('lifecycle', sub { }, name => undef) },
                qr/\A\Q$sub\E: the name filter must be a string/, 'subscribe with an undefined name filter');
    check_croak(sub { $m->subscribe('lifecycle', sub { }, uuid => ['x']) },
                qr/\A\Q$sub\E: the uuid filter must be a string/, 'subscribe with a reference as uuid filter');
    my $unsub = 'Sys::Virt::Event::Monitor->unsubscribe';
    check_croak(sub { $m->unsubscribe(42) }, qr/\A\Q$unsub\E: no subscription 42 /,
                'unsubscribe of an unknown id');
    check_croak(sub { $m->unsubscribe(undef) }, qr/\A\Q$unsub\E: no subscription undef /,
                'unsubscribe of undef');

    # nothing of the failed subscriptions is left
    $m->start;
    check_is(join(',', $m->registered_events), '', 'the failed subscribes added nothing: nothing registered');
    my $id = $m->subscribe('reboot', sub { });
    check_is($id, 1, 'the first subscription that works gets id 1');
    check_croak(sub { $m->subscribe([qw(lifecycle sve-nothing)], sub { }) },
                qr/\A\Q$sub\E: unknown event type 'sve-nothing'/, 'a failed subscribe while running');
    check_is(join(',', $m->registered_events), 'reboot', '... registers nothing more');
    check_croak(sub { $m->start }, qr/\ASys::Virt::Event::Monitor->start: already started/,
                'start twice');
    check($m->is_running && $m->is_connected, '... the monitor still runs');
    check_is(join(',', $m->registered_events), 'reboot', '... with what it had registered');

    check_croak(sub { $m->record('sve-nothing', undef, undef) },
                qr/\ASys::Virt::Event::Monitor->record: unknown event type 'sve-nothing'/,
                'record with an unknown type');
    {
        my @warned;
        local $SIG{__WARN__} = sub { push @warned, $_[0] };
        check_croak(sub { Sys::Virt::Event::Monitor->record(undef) },
                    qr/\ASys::Virt::Event::Monitor->record: unknown event type 'undef'/, 'record with no type');
        check(!@warned, 'record with no type: croaks without a warning', @warned);
    }
    for my $bad (undef, 'lifecycle', [], {}, { kind => 'domain' }) {
        check_croak(sub { Sys::Virt::Event::Monitor->describe($bad) },
                    qr/\ASys::Virt::Event::Monitor->describe: needs an event record \(a hash reference\)/,
                    'describe with ' . (ref $bad eq 'HASH' ? (%$bad ? 'a hash without event' : 'an empty hash')
                                        : ref $bad ? 'an array ref' : show($bad)));
    }
    check_is(join("\n", @errors), '', 'on_error: nothing');
    $m->stop;
    return;
}

# Idle (connected, every event registered, none happening): little CPU,
# and no timer of the monitor's.
sub case_idle_cpu {
    my ($loop) = @_;
    # count the monitor's timers where they are made: the public API
    my (%live, $added);
    {
        no warnings 'redefine';
        my $add = \&Sys::Virt::Event::add_timeout;
        my $remove = \&Sys::Virt::Event::remove_timeout;
        *Sys::Virt::Event::add_timeout = sub {
            my $id = $add->(@_);
            if (caller eq 'Sys::Virt::Event::Monitor') { $added++; $live{$id} = 1 }
            return $id;
        };
        *Sys::Virt::Event::remove_timeout = sub { delete $live{$_[0]}; return $remove->(@_) };
    }
    my @before = $loop->introspects ? $loop->timers : ();
    my (@errors, @got);
    my $m = monitor(\@errors);
    $m->subscribe('all', sub { push @got, $_[0] });
    $m->start;
    $loop->run_for(0.1);
    my @t0 = times;
    my $t0 = Time::HiRes::time();
    $loop->run_for(0.5);
    my @t1 = times;
    my $cpu = $t1[0] + $t1[1] - $t0[0] - $t0[1];
    my $wall = Time::HiRes::time() - $t0;
    check($cpu < 0.2, sprintf('idle for %.2f s, the process used little CPU', $wall),
          sprintf('user+system: %.2f s', $cpu));
    check_is(scalar @got, 0, 'no event meanwhile');
    check_is($added // 0, 0, 'the monitor added no timer (Sys::Virt::Event::add_timeout)');
    if ($loop->introspects) {
        my %old = map { $_ => 1 } @before;
        my @new = grep { !$old{$_} } $loop->timers;
        check(@new <= 1, 'the loop has at most libvirt\'s own event timer more',
              'new timers: ' . join(',', @new));
        check(!grep({ $live{$_} } @new), 'none of the loop\'s timers is the monitor\'s');
    } else {
        check_skip('the monitor added no timer to the loop', 'the loop cannot list its timers');
    }
    $m->stop;
    return;
}

# A URI that cannot connect: without reconnect, start croaks naming it;
# with, start returns and on_error tells each attempt, until stop.
sub case_cannot_connect {
    my ($loop) = @_;
    my $start = 'Sys::Virt::Event::Monitor->start';
    for my $uri ($NO_FILE, $NO_SOCKET) {
        my @errors;
        my $m = Sys::Virt::Event::Monitor->new(uri => $uri, reconnect => 0,
                                               on_error => sub { push @errors, $_[0] });
        check_croak(sub { $m->start }, qr/\A\Q$start\E: cannot connect to \Q$uri\E: \S/,
                    "reconnect => 0, $uri: start");
        check(!$m->is_running && !$m->is_connected, '... the monitor is neither running nor connected');
        check_croak(sub { $m->start }, qr/\A\Q$start\E: cannot connect to \Q$uri\E: \S/,
                    '... start again (no half state: not "already started")');
        check_is(scalar @errors, 0, '... on_error is not called');
    }

    my (@errors, @got);
    my $m = Sys::Virt::Event::Monitor->new(uri => $NO_SOCKET, backoff => [0.05, 0.2],
                                           on_error => sub { push @errors, $_[0] });
    $m->subscribe('all', sub { push @got, $_[0] });
    check_is(error_of { check_is($m->start, $m, 'reconnect on: start returns the monitor') }, '',
             '... and does not croak');
    check(!$m->is_connected, '... not connected');
    check($m->is_running, '... running (trying)');
    check_like($errors[0] // '', qr/\Acannot connect to \Q$NO_SOCKET\E: \S.*: trying again\z/,
               'on_error: the first failure, at start');
    $loop->run_until(sub { @errors >= 4 }, 5 * Loops::patience());
    shift @errors;
    my @attempts = map { /\Areconnecting, attempt (\d+): cannot connect to \Q$NO_SOCKET\E: \S/ ? $1 : 'bad' } @errors;
    check(@attempts >= 3, 'on_error: at least three messages', @errors);
    check_is("@attempts", join(' ', 1 .. @attempts),
             'on_error: "reconnecting, attempt N: cannot connect to URI: ...", N = 1, 2, 3, ...', @errors);
    check_is(scalar @got, 0, 'no record (no reconnect record without a connection)');
    $m->stop;
    check(!$m->is_running && !$m->is_connected, 'stopped');
    my $told = @errors;
    $loop->run_for(0.5);
    check_is(scalar(@errors) - $told, 0, 'after stop, no more attempts (no on_error) while the loop runs');
    $loop->drain;
    if ($loop->introspects) {
        check($loop->is_idle, 'stopping the retries leaves the loop idle', $loop->describe);
    }

    @errors = ();
    $m->start;
    $loop->run_until(sub { @errors >= 2 }, 5 * Loops::patience());
    check(scalar(($errors[1] // '') =~ /\Areconnecting, attempt 1:/),
               'started again: the attempts count from 1 again', @errors);
    my $weak = $m;
    Scalar::Util::weaken($weak);
    undef $m;
    @errors = ();
    $loop->run_for(0.5);
    check(!$weak && !@errors, 'dropping the last reference to a monitor that is retrying stops it',
          ($weak ? 'the monitor is still alive; ' : '') . scalar(@errors) . ' attempts after');
    $weak->stop if $weak;
    return;
}

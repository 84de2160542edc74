use strict;
use warnings;

# Sys::Virt::Event::AnyEvent: libvirt's watches and timers as AnyEvent
# watchers.  This file tests it on AnyEvent's EV backend;
# t/76-anyevent-perl-backend.t runs it again on the pure-Perl backend.
#
# Registration cases, the destruction of a loop object and program exit
# each need a process of their own (libvirt takes one loop per process):
# they run first, in children.  The rest runs here, with the loop
# registered once: public watches and timers on pipes, then domain
# lifecycle events from libvirt's test driver (test:///default).

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use IPC::Open3 ();
use Scalar::Util qw(refaddr);
use TestUtil qw(in_child have_sys_virt anyevent_run_until
                anyevent_run_for report);
use Lifecycle ();

# The backend under test; t/76-anyevent-perl-backend.t sets 'Perl'.
our $MODEL;
BEGIN {
    $MODEL = 'EV' unless defined $MODEL;
    plan skip_all => 'AnyEvent is not installed' unless eval { require AnyEvent; 1 };
    plan skip_all => "AnyEvent has no backend '$MODEL'"
        unless eval "require AnyEvent::Impl::$MODEL; 1";
    # AnyEvent picks its backend when the first watcher is made
    $ENV{PERL_ANYEVENT_MODEL} = $MODEL;
}

use Sys::Virt::Event qw(:constants);
use Sys::Virt::Event::AnyEvent;

# -- helpers -----------------------------------------------------------------

# Guards count their destruction by name: a coderef that closes over one
# is released when libvirt's free function for its watch or timer runs.
{
    package Guard;
    my %destroyed;
    sub new { my ($class, $name) = @_; return bless { name => $name }, $class }
    sub DESTROY { $destroyed{$_[0]{name}}++ }
    sub destroyed { return $destroyed{$_[1]} || 0 }
}

# A coderef that holds a guard named $name and then calls $code.
sub guarded {
    my ($name, $code) = @_;
    my $guard = Guard->new($name);
    return sub { my $keep = $guard; $code->(@_) if $code };
}

# Runs $code in a child, checks that it ended normally and in time, and
# returns its "name=value" lines as a hash (the whole output under '').
sub child {
    my ($name, $code) = @_;
    my $r = in_child($code, timeout => 20);
    ok(!$r->{timed_out} && !$r->{signal} && defined $r->{exit} && $r->{exit} == 0,
       "$name: the child ended normally, in time")
        or diag("exit $r->{exit}, signal $r->{signal}, output:\n$r->{output}");
    my %out = ('' => $r->{output});
    for my $line (split /\n/, $r->{output}) {
        $out{$1} = $2 if $line =~ /^(\w+)=(.*)\z/;
    }
    return \%out;
}


# Runs the AnyEvent loop until $cond is true or $seconds pass.
sub run_until { return anyevent_run_until(@_) }

sub run_for { return anyevent_run_for(@_) }

# Runs $n iterations of the AnyEvent loop that poll for I/O, counted by a
# watcher of our own on a descriptor that is always ready.
sub run_iterations {
    my ($n) = @_;
    pipe(my $r, my $w) or die "pipe: $!";
    my $count = 0;
    my $cv = AnyEvent->condvar;
    my $io = AnyEvent->io(fh => $w, poll => 'w', cb => sub { $cv->send if ++$count >= $n });
    AnyEvent->now_update;   # the limit counts from now, not the loop's cached time
    my $limit = AnyEvent->timer(after => 5, cb => sub { $cv->send });
    $cv->recv;
    return $count;
}

sub error_of (&) {
    my ($code) = @_;
    local $@;
    return eval { $code->(); 1 } ? '' : "$@";
}

# -- registration, each in a process of its own ------------------------------

{
    my $r = child('register twice', sub {
        my $loop = Sys::Virt::Event::AnyEvent->register(native => 0);
        my $again = Sys::Virt::Event::AnyEvent->register(native => 0);
        my $timer = Sys::Virt::Event::add_timeout(-1, sub { });
        report(class => ref $loop, same => $loop == $again ? 1 : 0,
               base => $loop->isa('Sys::Virt::Event') ? 1 : 0,
               timer => $timer, timers => join(',', $loop->timers),
               model => AnyEvent::detect());
    });
    is($r->{class}, 'Sys::Virt::Event::AnyEvent', 'register makes an object of the class');
    is($r->{base}, 1, '... a Sys::Virt::Event');
    is($r->{same}, 1, 'calling register again returns the same object');
    is($r->{timers}, $r->{timer}, 'libvirt calls that object: a public timer lands in it');
    is($r->{model}, "AnyEvent::Impl::$MODEL", "AnyEvent runs on the $MODEL backend");
}

{
    # On EV, the class method registers the native loop when it was
    # built; on any other backend, or asked not to, this class's loop.
    my $r = child('register without options', sub {
        my $loop = Sys::Virt::Event::AnyEvent->register;
        my $timer = Sys::Virt::Event::add_timeout(-1, sub { });
        report(class => ref $loop,
               again => Sys::Virt::Event::AnyEvent->register == $loop ? 1 : 0,
               perl_too => error_of { Sys::Virt::Event::AnyEvent->register(native => 0) },
               bad => error_of { Sys::Virt::Event::AnyEvent->register(nativ => 0) },
               timers => join(',', $loop->timers), timer => $timer);
    });
    my $native = $MODEL eq 'EV' && eval { require Sys::Virt::Event::EV; 1 };
    is($r->{class}, $native ? 'Sys::Virt::Event::EV' : 'Sys::Virt::Event::AnyEvent',
       $native ? 'on EV, register chooses the native loop'
               : "on $MODEL, register chooses the loop in Perl");
    is($r->{again}, 1, '... and returns the same object when called again');
    is($r->{timers}, $r->{timer}, '... which libvirt calls: a public timer lands in it');
    if ($native) {
        like($r->{perl_too}, qr/^Sys::Virt::Event::register: the native EV loop .* is already registered/,
             'the Perl loop cannot be registered beside it');
    } else {
        is($r->{perl_too}, '', 'native => 0 then returns the same object');
    }
    like($r->{bad}, qr/^Sys::Virt::Event::AnyEvent::register: unknown option 'nativ'/,
         'an unknown option is refused by name');
}

{
    my $r = child('new, then register', sub {
        my $loop = Sys::Virt::Event::AnyEvent->new;
        my $registered = $loop->register;
        report(self => $registered == $loop ? 1 : 0,
               class_method => Sys::Virt::Event::AnyEvent->register(native => 0) == $loop ? 1 : 0,
               again => error_of { $loop->register },
               other => error_of { Sys::Virt::Event::AnyEvent->new->register });
    });
    is($r->{self}, 1, '$loop->register returns $loop');
    is($r->{class_method}, 1, 'the class method then returns that object');
    is($r->{again}, '', 'registering it again is a no-op');
    like($r->{other}, qr/already registered.* at \Q${\ __FILE__}\E line \d+/,
         'another object of the class is refused, at the caller');
}

{
    my $r = child('another loop first', sub {
        require TestLoop;
        TestLoop->new->register;
        report(error => error_of { Sys::Virt::Event::AnyEvent->register(native => 0) });
    });
    like($r->{error}, qr/\(TestLoop\) is already registered/,
         'register croaks when another loop is registered');
}

{
    my $r = child('default loop first', sub {
        Sys::Virt::Event::register_default();
        report(error => error_of { Sys::Virt::Event::AnyEvent->register(native => 0) });
    });
    like($r->{error}, qr/default event loop is already registered/,
         'register croaks when libvirt\'s default loop is registered');
}

# An object that is not registered, used by a registered loop that
# forwards to it, goes away: what it was waiting to free is freed then,
# once; what is still registered is freed once libvirt removes it.
{
    package Forward;
    our @ISA = ('Sys::Virt::Event');
    sub new { my ($class, $inner) = @_; return bless { inner => $inner }, $class }
    for my $method (qw(add_handle update_handle remove_handle
                       add_timeout update_timeout remove_timeout)) {
        no strict 'refs';
        *$method = sub {
            my $self = shift;
            my $inner = $self->{inner} or return $method =~ /^remove/ ? 0 : undef;
            return $inner->$method(@_);
        };
    }
}

{
    my $r = child('an unregistered object goes away', sub {
        my @warnings;
        local $SIG{__WARN__} = sub { push @warnings, @_ };
        my $inner = Sys::Virt::Event::AnyEvent->new;
        my $forward = Forward->new($inner);
        $forward->register;
        my $removed = Sys::Virt::Event::add_timeout(-1, main::guarded('removed'));
        my $live = Sys::Virt::Event::add_timeout(-1, main::guarded('live'));
        Sys::Virt::Event::remove_timeout($removed);
        report(pending => $inner->is_idle ? 0 : 1,
               before => Guard->destroyed('removed'));
        undef $inner;
        delete $forward->{inner};
        report(removed_at_destroy => Guard->destroyed('removed'),
               live_at_destroy => Guard->destroyed('live'));
        Sys::Virt::Event::remove_timeout($live);
        report(live_at_remove => Guard->destroyed('live'));
        main::run_iterations(5);
        main::run_for(0.05);
        report(removed_final => Guard->destroyed('removed'),
               live_final => Guard->destroyed('live'),
               warnings => join('', @warnings));
    });
    is($r->{pending}, 1, 'destroy: the removed timer\'s free was waiting for the loop');
    is($r->{before}, 0, '... and had not run');
    is($r->{removed_at_destroy}, 1, 'destroy: it runs when the object goes away');
    is($r->{live_at_destroy}, 0, 'destroy: a timer libvirt still has is not freed');
    is($r->{live_at_remove}, 1, 'destroy: ... until libvirt removes it');
    is($r->{removed_final}, 1, 'destroy: the loop running later frees nothing twice');
    is($r->{live_final}, 1, 'destroy: ... of either');
    is($r->{warnings}, '', 'destroy: no warnings');
}

# Program exit, in a perl of its own (in_child skips END blocks).
{
    my $code = <<'CODE';
use strict;
use warnings;
use Sys::Virt::Event;
use Sys::Virt::Event::AnyEvent;
{
    package Guard;
    sub new { return bless { name => $_[1] }, $_[0] }
    sub DESTROY { print "freed $_[0]{name} ${^GLOBAL_PHASE}\n" }
}
sub guarded { my $g = Guard->new($_[0]); return sub { $g } }
my $loop = Sys::Virt::Event::AnyEvent->register(native => 0);
my $removed = Sys::Virt::Event::add_timeout(-1, guarded('removed'));
my $timer = Sys::Virt::Event::add_timeout(100, guarded('live-timer'));
pipe(my $r, my $w) or die "pipe: $!";
my $watch = Sys::Virt::Event::add_handle(fileno $r, 1, guarded('live-watch'));
Sys::Virt::Event::remove_timeout($removed);
print 'pending ', ($loop->is_idle ? 0 : 1), "\n";
print "exit\n";
exit 0;
CODE
    local $ENV{PERL5LIB} = join ':', grep { !ref } @INC;
    local $ENV{PERL_ANYEVENT_MODEL} = $MODEL;
    # its STDERR goes where its STDOUT goes
    my $pid = IPC::Open3::open3(my $in, my $out, undef, $^X, '-e', $code);
    close $in;
    my $output = do { local $/; <$out> };
    waitpid $pid, 0;
    my $status = $?;
    is($status, 0, 'exit: the program exits normally') or diag($output);
    like($output, qr/^pending 1\nexit\n/, 'exit: a free was waiting for the loop');
    my @removed = $output =~ /^freed removed (\w+)$/mg;
    is_deeply(\@removed, ['END'],
              'exit: it runs once, at END, before global destruction');
    for my $name (qw(live-timer live-watch)) {
        my @freed = $output =~ /^freed \Q$name\E (\w+)$/mg;
        ok(@freed <= 1 && !grep({ $_ ne 'DESTRUCT' } @freed),
           "exit: $name, still registered, is not freed by the loop")
            or diag($output);
    }
    unlike($output, qr/Sys::Virt::Event|Attempt to free|panic|during global destruction/,
           'exit: nothing is reported') or diag($output);
}

# -- the loop, registered here -----------------------------------------------

# Every wait below is bounded by a timer, which a loop spinning in a
# callback would never reach: then this ends the file instead.
$SIG{ALRM} = sub { BAIL_OUT("no progress in 60 s on the $MODEL backend") };
alarm 60;

# Spies: every remove and every free the loop asks for.  A free counts
# the $ff handle it was given (kept, so its address is not reused).
our $in_remove = 0;
my ($removes, $freed_in_remove, %freed) = (0, 0);
{
    no strict 'refs';
    no warnings 'redefine';
    for my $method (qw(remove_handle remove_timeout)) {
        my $orig = \&{"Sys::Virt::Event::AnyEvent::$method"};
        *{"Sys::Virt::Event::AnyEvent::$method"} = sub {
            local $in_remove = 1;
            $removes++;
            return $orig->(@_);
        };
    }
    *Sys::Virt::Event::AnyEvent::_free_callback_opaque = sub {
        my ($self, $ff) = @_;
        push @{$freed{refaddr $ff}}, $ff;
        $freed_in_remove++ if $in_remove;
        return Sys::Virt::Event::_free_callback_opaque(@_);
    };
}

sub frees_once {
    my @twice = grep { @$_ != 1 } values %freed;
    return !@twice && keys(%freed) == $removes;
}

my $loop = Sys::Virt::Event::AnyEvent->register(native => 0);
is(AnyEvent::detect(), "AnyEvent::Impl::$MODEL", "AnyEvent runs on the $MODEL backend");
ok($loop->is_idle, 'a new loop is idle');
is_deeply([$loop->watches, $loop->timers], [], '... with no watches or timers');

pipe(my $r, my $w) or die "pipe: $!";
$w->autoflush(1);

# -- a watch fires with (watch, fd, events) -------------------------------------
my @fired;
my $watch = Sys::Virt::Event::add_handle(fileno $r, HANDLE_READABLE,
                                         guarded(reader => sub { push @fired, [@_] }));
is_deeply([$loop->watches], [$watch], 'watches lists the new watch');
ok(!$loop->is_idle, 'the loop is not idle with a watch');
is(run_iterations(5), 5, 'the loop runs');
is(scalar @fired, 0, 'nothing fires before data arrives');
syswrite $w, 'x';
ok(run_until(sub { @fired }, 5), 'data arrives: the watch fires');
is_deeply($fired[0], [$watch, fileno $r, HANDLE_READABLE],
          'the callback gets the watch, the fd and READABLE');

# -- mask 0 disables ---------------------------------------------------------------
Sys::Virt::Event::update_handle($watch, 0);
@fired = ();
run_iterations(20);
is(scalar @fired, 0, 'with mask 0 the watch does not fire, though data is pending');
is_deeply([$loop->watches], [$watch], '... and it is still listed');
Sys::Virt::Event::update_handle($watch, HANDLE_READABLE);
ok(run_until(sub { @fired }, 5), 'the mask restored, it fires again');
sysread $r, my $buf, 10;

{
    my @zero;
    my $off = Sys::Virt::Event::add_handle(fileno $r, 0, sub { push @zero, [@_] });
    syswrite $w, 'y';
    run_iterations(20);
    is(scalar @zero, 0, 'a watch added with mask 0 does not fire');
    Sys::Virt::Event::remove_handle($off);
    sysread $r, $buf, 10;
    @fired = ();
}

# -- writable, and error without asking ------------------------------------------------
{
    pipe(my $pr, my $pw) or die "pipe: $!";
    my (@wfired, @rfired);
    my $ww = Sys::Virt::Event::add_handle($pw, HANDLE_WRITABLE, sub { push @wfired, [@_] });
    ok(run_until(sub { @wfired }, 5), 'a writable pipe fires a WRITABLE watch');
    is_deeply($wfired[0], [$ww, fileno $pw, HANDLE_WRITABLE], '... with WRITABLE only');
    # a reading watch on the write end: nothing to read, ever
    my $rw = Sys::Virt::Event::add_handle($pw, HANDLE_READABLE, sub { push @rfired, [@_] });
    run_iterations(10);
    is(scalar @rfired, 0, 'a reading watch on a pipe\'s write end is quiet');
    close $pr;    # no reader left: an error on the write end
    @wfired = ();
    ok(run_until(sub { @rfired && @wfired }, 5), 'the reader closes: both watches fire');
    is($rfired[0][2], HANDLE_ERROR,
       'the reading watch gets ERROR, which it did not ask for, and nothing else');
    is($wfired[0][2], HANDLE_WRITABLE | HANDLE_ERROR, 'the writing watch gets WRITABLE and ERROR');
    Sys::Virt::Event::remove_handle($_) for $ww, $rw;
    close $pw;
}

# -- hangup on a reading watch -------------------------------------------------
{
    pipe(my $pr, my $pw) or die "pipe: $!";
    my (@hup, @only, @off);
    my $hw = Sys::Virt::Event::add_handle($pr, HANDLE_READABLE, sub { push @hup, [@_] });
    my $ow = Sys::Virt::Event::add_handle($pr, HANDLE_HANGUP, sub { push @only, [@_] });
    my $zw = Sys::Virt::Event::add_handle($pr, 0, sub { push @off, [@_] });
    run_iterations(10);
    is(scalar(@hup) + scalar(@only), 0, 'an empty pipe with a writer is quiet');
    close $pw;
    ok(run_until(sub { @hup && @only }, 5), 'the writer closes: the watches fire');
    is($hup[0][2], HANDLE_HANGUP, 'a READABLE watch gets HANGUP (and no READABLE: no data)');
    is($only[0][2], HANDLE_HANGUP, 'a watch asking only for HANGUP gets it');
    run_iterations(10);
    is(scalar @off, 0, 'a watch of mask 0 gets nothing, not even HANGUP');
    Sys::Virt::Event::remove_handle($_) for $hw, $ow, $zw;
    close $pr;
}

# -- a watch for HANGUP alone, on a descriptor with unread data -----------------
{
    # AnyEvent can only wait for readability there: the watch must not
    # wake the loop on every iteration while the data stays unread.
    pipe(my $pr, my $pw) or die "pipe: $!";
    syswrite $pw, 'unread';
    my @calls;
    my $hw = Sys::Virt::Event::add_handle($pr, HANDLE_HANGUP, sub { push @calls, [@_] });
    my $wakeups = 0;
    {
        no warnings 'redefine';
        my $orig = \&Sys::Virt::Event::AnyEvent::_dispatch_watch;
        local *Sys::Virt::Event::AnyEvent::_dispatch_watch = sub {
            $wakeups++ if $_[1] == $hw;
            return $orig->(@_);
        };
        run_iterations(20);
    }
    is(scalar @calls, 0, 'a HANGUP-only watch is not called for data');
    ok($wakeups <= 1, "... and does not wake up on every iteration ($wakeups times in 20)");
    Sys::Virt::Event::remove_handle($hw);
}

# -- timers ---------------------------------------------------------------------------
{
    my %count;
    my $off = Sys::Virt::Event::add_timeout(-1, sub { $count{off}++ });
    is_deeply([$loop->timers], [$off], 'timers lists the new timer');
    run_for(0.2);
    is($count{off} // 0, 0, 'a timer of interval -1 does not fire');

    # interval 0: once on every iteration, and I/O is still served
    my @seq;
    my $zero = Sys::Virt::Event::add_timeout(0, sub { push @seq, 'T' });
    Sys::Virt::Event::update_timeout($zero, 0);      # again: still one timer
    pipe(my $pr, my $pw) or die "pipe: $!";
    my $io = 0;
    my $done = AnyEvent->condvar;
    my $always = Sys::Virt::Event::add_handle($pw, HANDLE_WRITABLE, sub {
        push @seq, 'I';
        $done->send if ++$io >= 50;
    });
    my $limit = AnyEvent->timer(after => 5, cb => sub { $done->send });
    $done->recv;
    is($io, 50, 'a ready watch is served while a 0 ms timer is live');
    my $ticks = grep { $_ eq 'T' } @seq;
    ok($ticks >= $io - 1 && $ticks <= $io + 1,
       "the 0 ms timer fires once per iteration ($ticks times in $io iterations)");
    Sys::Virt::Event::remove_handle($always);

    Sys::Virt::Event::update_timeout($zero, -1);
    @seq = ();
    run_iterations(10);
    is(scalar @seq, 0, 'set to -1, the 0 ms timer stops at once');

    # a changed interval counts from the change
    my $long = Sys::Virt::Event::add_timeout(3_600_000, sub { $count{long}++ });
    run_iterations(5);
    Sys::Virt::Event::update_timeout($long, 10);
    ok(run_until(sub { $count{long} }, 5),
       'an hour-long timer set to 10 ms fires now, not in an hour');
    Sys::Virt::Event::update_timeout($long, 3_600_000);
    $count{long} = 0;
    run_for(0.2);
    is($count{long}, 0, 'set back to an hour, it does not fire at 10 ms any more');
    Sys::Virt::Event::update_timeout($long, -1);
    run_for(0.1);
    is($count{long}, 0, 'set to -1, it does not fire');
    Sys::Virt::Event::update_timeout($long, 10);
    ok(run_until(sub { $count{long} >= 3 }, 5), 'set to 10 ms again, it repeats');

    is_deeply([$loop->timers], [sort { $a <=> $b } $off, $zero, $long],
              'timers lists the live timers, in order');
    is(scalar $loop->timers, 3, '... and counts them in scalar context');
    is(scalar $loop->watches, 1, 'so does watches');
    Sys::Virt::Event::remove_timeout($_) for $off, $zero, $long;
    is_deeply([$loop->timers], [], 'removed timers are not listed');
}

# -- callbacks change watches while the loop dispatches -----------------------
{
    # a watch removes itself; its data stays unread
    my ($calls, $freed_inside) = (0, -1);
    my $self_watch;
    $self_watch = Sys::Virt::Event::add_handle($r, HANDLE_READABLE, guarded(self => sub {
        $calls++;
        Sys::Virt::Event::remove_handle($self_watch);
        $freed_inside = Guard->destroyed('self');
    }));
    syswrite $w, 'z';
    ok(run_until(sub { $calls }, 5), 'a watch that removes itself fires');
    is($freed_inside, 0, '... and is not freed inside its callback');
    run_iterations(20);
    is($calls, 1, '... once: removed in its own callback, it is not called again');
    ok($loop->drain(5), 'drain returns true once the free has run');
    is(Guard->destroyed('self'), 1, '... which it has, once');

    # the same for a timer
    my $tcalls = 0;
    my $self_timer;
    $self_timer = Sys::Virt::Event::add_timeout(0, guarded(self_timer => sub {
        $tcalls++;
        Sys::Virt::Event::remove_timeout($self_timer);
    }));
    ok($loop->drain(5), 'a 0 ms timer that removes itself drains');
    is($tcalls, 1, '... having fired once');
    is(Guard->destroyed('self_timer'), 1, '... and been freed once');

    # a watch updates its own mask to 0, another watch is added meanwhile
    my ($muted, $added) = (0, 0);
    my ($mute_watch, $new_watch);
    $mute_watch = Sys::Virt::Event::add_handle($r, HANDLE_READABLE, sub {
        $muted++;
        Sys::Virt::Event::update_handle($mute_watch, 0);
        $new_watch //= Sys::Virt::Event::add_handle($r, HANDLE_READABLE, sub { $added++ });
    });
    ok(run_until(sub { $added }, 5), 'a watch added by a callback fires');
    is($muted, 1, 'a watch that set its own mask to 0 is not called again');
    Sys::Virt::Event::remove_handle($_) for $mute_watch, $new_watch;
    sysread $r, $buf, 10;
}

{
    # two ready watches; whichever runs first removes the other
    pipe(my $r1, my $w1) or die "pipe: $!";
    pipe(my $r2, my $w2) or die "pipe: $!";
    syswrite $w1, 'a';
    syswrite $w2, 'b';
    my (@calls, %id);
    for my $name (qw(one two)) {
        my $other = $name eq 'one' ? 'two' : 'one';
        $id{$name} = Sys::Virt::Event::add_handle($name eq 'one' ? $r1 : $r2, HANDLE_READABLE,
                                                  guarded("pair-$name" => sub {
            push @calls, $name;
            Sys::Virt::Event::remove_handle($_) for grep { defined } delete @id{$other, $name};
        }));
    }
    ok(run_until(sub { @calls }, 5), 'two ready watches: one fires');
    run_iterations(20);
    is(scalar @calls, 1, 'the other, removed by the first callback, is never called');
    ok($loop->drain(5), 'both are freed');
    is(Guard->destroyed('pair-one') + Guard->destroyed('pair-two'), 2, '... once each');
}

# -- frees -----------------------------------------------------------------------
{
    my $t = Sys::Virt::Event::add_timeout(-1, guarded('timer'));
    Sys::Virt::Event::remove_timeout($t);
    is(Guard->destroyed('timer'), 0, 'a removed timer is not freed inside remove');
    ok(!$loop->is_idle, '... the free is pending, so the loop is not idle');
    ok($loop->drain(5), 'drain runs it');
    is(Guard->destroyed('timer'), 1, '... once');

    Sys::Virt::Event::remove_handle($watch);
    is(Guard->destroyed('reader'), 0, 'a removed watch is not freed inside remove');
    ok($loop->drain(5), 'drain');
    is(Guard->destroyed('reader'), 1, '... then it is freed once');
    run_iterations(5);
    is(Guard->destroyed('reader') + Guard->destroyed('timer'), 2, 'and never again');

    is($freed_in_remove, 0, 'the loop never asked for a free inside remove');
    ok(frees_once(), "every removed watch and timer was freed exactly once ($removes)")
        or diag(explain(\%freed));
}

# -- introspection and drain ------------------------------------------------------
{
    ok($loop->is_idle, 'idle again');
    is_deeply([$loop->watches, $loop->timers], [], '... nothing listed');
    ok($loop->drain(0), 'drain of an idle loop is true at once');
    my $spin = Sys::Virt::Event::add_timeout(0, sub { });
    is($loop->drain(0.2), 0, 'drain times out (false) while a 0 ms timer stays');
    Sys::Virt::Event::update_timeout($spin, -1);
    ok($loop->drain(1), 'set to -1, drained');
    Sys::Virt::Event::remove_timeout($spin);
    ok($loop->drain(5), 'removed, drained');
    ok($loop->is_idle, 'idle');
    like(error_of { $loop->drain('soon') }, qr/^Sys::Virt::Event::AnyEvent::drain: SECONDS/,
         'drain refuses a bad number of seconds');
}

# -- libvirt's test driver: lifecycle events through the AnyEvent loop -------------
SKIP: {
    skip 'Sys::Virt is not installed', 1 unless have_sys_virt();
    require Sys::Virt;

    my $uri = 'test:///default';
    my $conn = Sys::Virt->new(uri => $uri);
    my $dom = $conn->get_domain_by_name('test');
    my @events;
    my $id = $conn->domain_event_register_any(undef,
        Sys::Virt::Domain::EVENT_ID_LIFECYCLE(), sub {
            my (undef, $d, $event, $detail) = @_;
            # never let an exception unwind through Sys::Virt and libvirt
            eval { push @events, [$d->get_name, $event, $detail]; 1 }
                or push @events, ["error: $@"];
            return 0;
        });
    ok(!$loop->is_idle, 'registering for events put libvirt\'s timer in the loop');

    my @steps = Lifecycle::lifecycle_steps($dom);
    for my $step (@steps) {
        my ($action, $do, $event, $detail) = @$step;
        @events = ();
        $do->();
        ok(run_until(sub { @events }, 5), "$action: an event arrives through AnyEvent");
        $loop->drain(1);
        is_deeply(\@events, [['test', $event, $detail]],
                  "$action: exactly one, with domain, event and detail");
    }

    $conn->domain_event_deregister_any($id);
    @events = ();
    $dom->destroy;
    $dom->create;
    ok(!run_until(sub { @events }, 0.5), 'deregistered: destroy and create deliver nothing');

    undef $dom;
    undef $conn;
    ok($loop->drain(5), 'the connection dropped, the loop drains');
    ok($loop->is_idle, '... and is idle: libvirt removed all it added');
    is_deeply([$loop->watches, $loop->timers], [], '... nothing listed');
    is($freed_in_remove, 0, 'no free was asked for inside remove');
    ok(frees_once(), "every removed watch and timer was freed exactly once ($removes)")
        or diag(explain(\%freed));
}

done_testing;

use strict;
use warnings;

# The integer arguments a public callback receives are made from SVs that
# the glue uses again from dispatch to dispatch.  Whatever a callback does
# with its @_ (keeps references to it, assigns to it, makes it read-only,
# weakens references to it, dispatches again from inside), every call
# sees its own values and nothing a callback kept changes afterwards.

use FindBin;
use lib "$FindBin::Bin/lib";

use Scalar::Util qw(weaken);
use Test::More;
use Sys::Virt::Event qw(:constants);
use TestLoop;

my $loop = TestLoop->new;
$loop->register;

pipe(my $r, my $w) or die "pipe: $!";
my $fd = fileno $r;

# Dispatches public watch $watch directly, as a loop does, with $events.
sub dispatch {
    my ($watch, $events) = @_;
    my $h = $loop->{handles}{$watch} or die "no watch $watch";
    $loop->_run_handle_callback($watch, $h->{fd}, $events, $h->{cb}, $h->{opaque});
}

sub dispatch_timer {
    my ($timer) = @_;
    my $t = $loop->{timeouts}{$timer} or die "no timer $timer";
    $loop->_run_timeout_callback($timer, $t->{cb}, $t->{opaque});
}

# A callback that does $what to its @_ and records what it received.
sub watch_doing {
    my ($what) = @_;
    my %w = (seen => [], kept => []);
    $w{watch} = Sys::Virt::Event::add_handle($fd, HANDLE_READABLE, sub {
        push @{$w{seen}}, [@_];
        $what->(\%w, @_);
    });
    return \%w;
}

my @masks = (HANDLE_READABLE, HANDLE_WRITABLE, HANDLE_ERROR | HANDLE_HANGUP,
             HANDLE_READABLE | HANDLE_WRITABLE);

my %cases = (
    'keeps references to its arguments' => sub {
        my ($w) = @_;
        push @{$w->{kept}}, [\$_[1], \$_[2], \$_[3]];
    },
    'assigns strings and references to its arguments' => sub {
        $_[1] = 'a string';
        $_[2] = [];
        $_[3] = 1.5;
    },
    'makes its arguments read-only' => sub {
        Internals::SvREADONLY($_[$_], 1) for 1 .. 3;
    },
    'weakens references to its arguments' => sub {
        my ($w) = @_;
        my $ref = \$_[3];
        weaken($ref);
        push @{$w->{kept}}, [\$ref];
    },
    'keeps a reference to @_' => sub {
        my $w = shift;
        push @{$w->{kept}}, \@_;
    },
);

for my $name (sort keys %cases) {
    my $w = watch_doing($cases{$name});
    dispatch($w->{watch}, $_) for @masks;
    is_deeply($w->{seen}, [map { [$w->{watch}, $fd, $_] } @masks],
              "a callback that $name receives each call's values");
    if ($name eq 'keeps references to its arguments') {
        is_deeply([map { [map { $$_ } @$_] } @{$w->{kept}}],
                  [map { [$w->{watch}, $fd, $_] } @masks],
                  'what it kept still holds the values of its own call');
    }
    Sys::Virt::Event::remove_handle($w->{watch});
}

# A plain callback after all of the above still gets the right values.
{
    my $w = watch_doing(sub { });
    dispatch($w->{watch}, $_) for @masks;
    is_deeply($w->{seen}, [map { [$w->{watch}, $fd, $_] } @masks],
              'a plain callback afterwards receives each call\'s values');
    Sys::Virt::Event::remove_handle($w->{watch});
}

# A dispatch from inside a callback: the inner call gets its values, and
# the outer call's arguments are intact when it resumes.
{
    my $inner = watch_doing(sub { });
    my @outer_after;
    my $outer = watch_doing(sub {
        my ($w, @args) = @_;
        dispatch($inner->{watch}, HANDLE_WRITABLE);
        push @outer_after, [@_[1 .. 3]];
    });
    dispatch($outer->{watch}, HANDLE_READABLE);
    dispatch($outer->{watch}, HANDLE_HANGUP);
    is_deeply($inner->{seen}, [([$inner->{watch}, $fd, HANDLE_WRITABLE]) x 2],
              'a nested dispatch receives its own values');
    is_deeply(\@outer_after, [[$outer->{watch}, $fd, HANDLE_READABLE],
                              [$outer->{watch}, $fd, HANDLE_HANGUP]],
              'the outer callback\'s arguments are intact after it');
    Sys::Virt::Event::remove_handle($_->{watch}) for $inner, $outer;
}

# Timers: one argument, the same rules.
{
    my (@seen, @kept);
    my $timer = Sys::Virt::Event::add_timeout(1000, sub {
        push @seen, [@_];
        push @kept, \$_[0];
        $_[0] = 'changed';
    });
    dispatch_timer($timer) for 1 .. 3;
    is_deeply(\@seen, [([$timer]) x 3], 'a timer callback receives its timer each time');
    is_deeply([map { $$_ } @kept], [('changed') x 3],
              'each kept argument holds what its own call left in it');
    Sys::Virt::Event::remove_timeout($timer);
}

done_testing;

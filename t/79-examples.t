use strict;
use warnings;

# The examples of examples/ run as a user would run them, and print the
# test domain's four lifecycle events (stopped, started, suspended,
# resumed) in order.  Those needing a module that is not installed skip
# and say which.

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use TestUtil qw(in_child have_sys_virt);

plan skip_all => 'Sys::Virt is not installed' unless have_sys_virt();

my $ROOT = "$FindBin::Bin/..";
# (event, detail) of each, as every example prints them
my @EVENTS = (5, 1, 2, 0, 3, 0, 4, 0);

# [example, the modules it needs, environment]
my @EXAMPLES = (
    ['lifecycle-events.pl', []],
    ['ev-run.pl', ['EV', 'Sys::Virt::Event::EV']],
    ['anyevent-condvar.pl', ['AnyEvent', 'EV', 'Sys::Virt::Event::EV'], { PERL_ANYEVENT_MODEL => 'EV' }],
    ['anyevent-condvar.pl', ['AnyEvent'], { PERL_ANYEVENT_MODEL => 'Perl' }],
    ['mojo-reactor-ev.pl', ['Mojo::IOLoop', 'Mojo::Reactor::EV', 'Sys::Virt::Event::EV']],
    ['io-async-loop-ev.pl', ['IO::Async::Loop::EV', 'Sys::Virt::Event::EV']],
);

for my $example (@EXAMPLES) {
    my ($file, $needs, $env) = @$example;
    my $name = $file . ($env ? " ($env->{PERL_ANYEVENT_MODEL})" : '');
    SKIP: {
        my @missing = grep { !eval "require $_; 1" } @$needs;
        skip("$name needs @missing, not installed", 2) if @missing;
        my $r = in_child(sub {
            @ENV{keys %$env} = values %$env if $env;
            exec $^X, (map { "-I$_" } "$ROOT/blib/lib", "$ROOT/blib/arch"),
                "$ROOT/examples/$file";
        }, timeout => 20);
        is($r->{exit}, 0, "$name exits 0") or diag($r->{output});
        my @events = $r->{output} =~ /^test: .*event (\d+), detail (\d+)\)?$/mg;
        is("@events", "@EVENTS", "$name prints the four events in order");
    }
}

done_testing;

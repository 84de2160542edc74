use strict;
use warnings;

# The system's Sys::Virt (Virt.so) defines subs and constants in the
# Sys::Virt::Event package too.  Whichever of the two modules a program
# loads first, loading both under -w prints nothing, and the functions in
# effect are this distribution's.  Each order runs in a fresh perl.

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Temp ();
use Test::More;
use TestUtil qw(in_child have_sys_virt);

BEGIN {
    plan skip_all => 'Sys::Virt is not installed' unless have_sys_virt();
}

# What the program reports, into the file named by its argument, so that
# its own output can be required to be empty.
my $PROBE = <<'END_OF_PROBE';
use B ();
my $file = shift @ARGV;
open my $out, '>', $file or die "open $file: $!";
for my $name (sort keys %Sys::Virt::Event::) {
    next if $name =~ /::\z/;
    next unless defined &{"Sys::Virt::Event::$name"};
    my $cv = B::svref_2object(\&{"Sys::Virt::Event::$name"});
    printf $out "sub %s %s %s\n", $name, ($cv->XSUB ? 'xsub' : 'perl'), $cv->FILE;
}
printf $out "inc %s\n", $INC{'Sys/Virt/Event.pm'};
printf $out "constants %s\n", join ' ', map { &{"Sys::Virt::Event::$_"}() }
    qw(HANDLE_READABLE HANDLE_WRITABLE HANDLE_ERROR HANDLE_HANGUP);
my $ok = eval { Sys::Virt::Event::add_timeout(10, sub { }); 1 };
(my $err = $ok ? 'none' : "$@") =~ s/\n.*//s;
printf $out "unregistered %s\n", $err;
my $conn = Sys::Virt->new(uri => 'test:///default');
printf $out "sys_virt %s\n", $conn->get_domain_by_name('test')->get_name;
close $out or die "close: $!";
END_OF_PROBE

my @ORDERS = (
    'use Sys::Virt; use Sys::Virt::Event;',
    'use Sys::Virt::Event; use Sys::Virt;',
);

for my $order (@ORDERS) {
    my $tmp = File::Temp->new;
    my $file = $tmp->filename;
    my @cmd = ($^X, '-w', (map { "-I$_" } @INC), '-e', "$order\n$PROBE", $file);
    my $res = in_child(sub { exec @cmd or die "exec $^X: $!" }, timeout => 60);

    ok(!$res->{timed_out}, "$order: finished in time");
    is($res->{exit}, 0, "$order: exited normally");
    is($res->{output}, '', "$order: printed nothing at all under -w");

    open my $in, '<', $file or die "open $file: $!";
    my (%sub, %info);
    while (my $line = <$in>) {
        chomp $line;
        if ($line =~ /^sub (\S+) (\S+) (.*)\z/) {
            $sub{$1} = { kind => $2, file => $3 };
        } elsif ($line =~ /^(\S+) (.*)\z/) {
            $info{$1} = $2;
        }
    }
    close $in;

    like($info{inc}, qr{\bblib/lib/Sys/Virt/Event\.pm\z},
         "$order: Sys/Virt/Event.pm is this distribution's");
    for my $name (qw(add_handle update_handle remove_handle add_timeout
                     update_timeout remove_timeout register_default run_default
                     _run_handle_callback _run_timeout_callback
                     _free_callback_opaque _register_impl)) {
        is_deeply($sub{$name}, { kind => 'xsub', file => 'Event.c' },
                  "$order: $name is our XSUB (from Event.c)");
    }
    is($sub{register} && $sub{register}{kind}, 'perl', "$order: register is a Perl sub");
    like($sub{register} && $sub{register}{file}, qr{\bblib/lib/Sys/Virt/Event\.pm\z},
         "$order: from our Event.pm");
    my @foreign = grep { $sub{$_}{file} =~ /Virt\.c\z/ } sort keys %sub;
    is_deeply(\@foreign, [], "$order: no sub left from Sys::Virt's Virt.so");
    for my $gone (qw(_run_handle_callback_helper _run_timeout_callback_helper
                     _free_callback_opaque_helper _add_handle _add_timeout)) {
        ok(!exists $sub{$gone}, "$order: Sys::Virt's $gone is not defined");
    }
    is($info{constants}, '1 2 4 8', "$order: the HANDLE_* constants");
    like($info{unregistered}, qr/^Sys::Virt::Event::add_timeout: no event loop is registered/,
         "$order: add_timeout before any registration croaks with our message");
    is($info{sys_virt}, 'test', "$order: Sys::Virt itself still works");
}

done_testing;

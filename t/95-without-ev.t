use strict;
use warnings;

# Without EV at configure time the distribution builds and works without
# its native loop, and perl Makefile.PL says so in one line.  EV is
# hidden from a copy of the distribution's files by a module path whose
# EV.pm dies, as a missing module would.

use FindBin;
use Test::More;
use File::Temp ();
use File::Copy ();
use File::Path ();
use File::Basename ();
use ExtUtils::Manifest ();

plan skip_all => 'a whole build: not under valgrind' if $ENV{SVE_UNDER_MEMCHECK};

my $ROOT = "$FindBin::Bin/..";
my $tmp = File::Temp->newdir;
my $copy = "$tmp/dist";
my $manifest = ExtUtils::Manifest::maniread("$ROOT/MANIFEST");
for my $file (keys %$manifest) {
    File::Path::make_path(File::Basename::dirname("$copy/$file"));
    File::Copy::copy("$ROOT/$file", "$copy/$file") or die "copy $file: $!";
}
mkdir "$tmp/noev" or die "mkdir: $!";
open my $fh, '>', "$tmp/noev/EV.pm" or die "EV.pm: $!";
print $fh qq{die "Can't locate EV.pm in \\\@INC (hidden by t/95)\\n";\n};
close $fh;

# Runs a command in the copy with EV hidden; its output, and its status.
sub in_copy {
    my @cmd = @_;
    my $pid = open(my $out, '-|') // die "fork: $!";
    if (!$pid) {
        chdir $copy or die "chdir: $!";
        open STDERR, '>&', \*STDOUT or die "dup: $!";
        $ENV{PERL5LIB} = join ':', "$tmp/noev", grep { length } $ENV{PERL5LIB} // '';
        exec @cmd or die "exec: $!";
    }
    local $/;
    my $text = <$out> // '';
    close $out;
    return ($text, $?);
}

my ($text, $status) = in_copy($^X, 'Makefile.PL');
is($status, 0, 'perl Makefile.PL succeeds without EV');
my @said = grep { /native/ } split /\n/, $text;
is(scalar @said, 1, 'it says one line about the native loop');
like($said[0] // '', qr/^The native EV loop \(Sys::Virt::Event::EV\) is left out: it needs EV and its C headers .*libev-perl/,
     '... that it is left out, and why');
ok(-e "$copy/Makefile", 'a Makefile is written');

($text, $status) = in_copy('make');
is($status, 0, 'make succeeds') or diag($text);
ok(!-e "$copy/evloop.o", 'the native loop is not compiled');
ok(!-e "$copy/blib/lib/Sys/Virt/Event/EV.pm", 'nor its module installed');

($text, $status) = in_copy($^X, '-Mblib', '-MSys::Virt::Event', '-e',
    'print defined &Sys::Virt::Event::EV::_register ? "native\n" : "none\n";'
    . 'my $n = 0; Sys::Virt::Event::register_default();'
    . 'my $t = Sys::Virt::Event::add_timeout(1, sub { $n++ });'
    . 'Sys::Virt::Event::run_default() until $n; print "fired $n\n";');
is($text, "none\nfired 1\n", 'the module loads and its default loop runs, without the native part');

done_testing;

use strict;
use warnings;

# The perl that Makefile.PL, the modules and the program declare as their
# minimum is one the C code can be built with: no lower than the newest
# perl API Event.xs uses, counting what ppport.h provides for older
# perls (its table: name|introduced|supported with ppport.h|flags, where
# the flag V marks a version that was never verified).

use FindBin;
use Test::More;

my $ROOT = "$FindBin::Bin/..";

sub slurp {
    my ($path) = @_;
    open my $fh, '<', "$ROOT/$path" or die "$path: $!";
    local $/;
    return scalar <$fh>;
}

my %since;
for my $line (split /\n/, slurp('ppport.h')) {
    next unless $line =~ /^(\w+)\|(5\.\d{6})?\|(5\.\d{6})?\|(\w*)$/;
    next if $4 =~ /V/;
    my $version = $3 // $2 or next;
    $since{$1} = $version;
}
cmp_ok(scalar keys %since, '>', 1000, 'ppport.h\'s API table was read');

my $needed = '5.006000';
my @newest;
for my $file (qw(Event.xs idmap.h)) {
    (my $code = slurp($file)) =~ s{/\*.*?\*/}{}gs;  # what comments name is not used
    my %used = map { $_ => 1 } $code =~ /\b([A-Za-z_]\w*)\b/g;
    for my $name (grep { $since{$_} } keys %used) {
        if ($since{$name} gt $needed) {
            ($needed, @newest) = ($since{$name}, $name);
        } elsif ($since{$name} eq $needed) {
            push @newest, $name;
        }
    }
}
note("the C code needs perl $needed, for @newest");

my ($declared) = slurp('Makefile.PL') =~ /MIN_PERL_VERSION\s*=>\s*'([\d.]+)'/;
ok(defined $declared, 'Makefile.PL declares MIN_PERL_VERSION');
$declared = sprintf '%d.%03d%03d', split /\./, $declared if $declared =~ /^\d+\.\d+\.\d+$/;
$declared .= '0' x (8 - length $declared) if $declared =~ /^5\.\d+$/;
cmp_ok($declared, 'ge', $needed, "MIN_PERL_VERSION ($declared) is at least what Event.xs needs");

for my $file (qw(Makefile.PL lib/Sys/Virt/Event.pm lib/Sys/Virt/EventImpl.pm
                 lib/Sys/Virt/Event/AnyEvent.pm bin/virt-events)) {
    my ($use) = slurp($file) =~ /^use (5\.\d+);/m;
    $use .= '0' x (8 - length $use) if defined $use;
    is($use, $declared, "$file says 'use' of the same perl");
}
my ($readme) = slurp('README.md') =~ /^perl (5\.\d+) or later/m;
is(sprintf('5.%03d000', (split /\./, $readme // '0.0')[1]), $declared,
   'README.md names the same perl');

done_testing;

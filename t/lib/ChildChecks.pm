package ChildChecks;

# Checks made in a child process and read back as tests by its parent
# (t/lib/LoopConformance.pm, t/86-monitor.t, t/88-monitor-daemon.t):
# libvirt takes one event loop per process, so a case runs in a child of
# its own (TestUtil::in_child) and prints what it finds, one line each;
# the parent turns the lines into Test::More results.
#
# In the child:
#   check($ok, $name, @diagnostics)     one test result; returns $ok
#   check_is($got, $expected, $name, @diagnostics)   string equality, undef
#                                       equal only to undef
#   check_like($got, qr/.../, $name)
#   check_cmp($got, '<', $limit, $name) a number against a limit
#                                       (<, <=, >, >=)
#   check_skip($name, $why)             a test skipped
#   remark($text)                       a note for the verbose output
#   figure($name, @values)              values for the parent to use
#   show($value)                        a value quoted, or 'undef'
#
# In the parent:
#   my $r = checks_in_child("$kind: $case", sub { ... }, TIMEOUT);
# runs the code in a child (TestUtil::in_child), reads what it printed
# with read_checks, asserts that it ended in time, by itself, with exit
# status 0 and at least one check, and returns what read_checks returns.
#   my $r = read_checks($output, "$kind: $case");
# read_checks passes every check as ok() (its diagnostics to diag() when
# it fails) and every skip as a skip, named "PREFIX: NAME"; notes each
# remark as "PREFIX: TEXT" where it stands, and returns
#   { checks  => how many checks and skips,
#     notes   => [remark text, ...],
#     figures => [[name, values...], ...],
#     output  => the other lines, joined by "\n" }
#
# A line: "\x1e", a tag (CHECK, SKIP, NOTE, FIGURE), then fields joined
# by tabs, with backslash, newline and tab escaped as \\, \n and \t.

use strict;
use warnings;

use Exporter 'import';
use Test::More;
use TestUtil qw(in_child);

our @EXPORT_OK = qw(check check_is check_like check_cmp check_skip remark
                    figure show read_checks checks_in_child);

# -- the child ---------------------------------------------------------------

sub _line {
    my ($tag, @fields) = @_;
    print join("\t", "\x1e$tag", map { _escape($_) } @fields), "\n";
    return;
}

sub _escape {
    my ($text) = @_;
    $text = '' unless defined $text;
    $text =~ s/\\/\\\\/g;
    $text =~ s/\n/\\n/g;
    $text =~ s/\t/\\t/g;
    return $text;
}

sub check {
    my ($ok, $name, @diag) = @_;
    _line('CHECK', ($ok ? 1 : 0), $name, join "\n", @diag);
    return $ok;
}

sub show { return defined $_[0] ? "'$_[0]'" : 'undef' }

sub check_is {
    my ($got, $expected, $name, @diag) = @_;
    my $ok = defined $got && defined $expected ? $got eq $expected
                                               : !defined $got && !defined $expected;
    return check($ok, $name, '     got: ' . show($got), 'expected: ' . show($expected), @diag);
}

sub check_like {
    my ($got, $re, $name) = @_;
    return check(defined $got && $got =~ $re, $name,
                 '     got: ' . show($got), "expected: $re");
}

my %CMP = ('<' => sub { $_[0] < $_[1] }, '<=' => sub { $_[0] <= $_[1] },
           '>' => sub { $_[0] > $_[1] }, '>=' => sub { $_[0] >= $_[1] });

sub check_cmp {
    my ($got, $op, $expected, $name) = @_;
    my $ok = defined $got && $got =~ /\A-?\d+(?:\.\d*)?(?:e-?\d+)?\z/i
        && $CMP{$op}->($got, $expected);
    return check($ok, $name, '     got: ' . show($got), "expected: $op $expected");
}

sub check_skip { my ($name, $why) = @_; _line('SKIP', $name, $why); return }

sub remark { _line('NOTE', $_[0]); return }

sub figure { _line('FIGURE', @_); return }

# -- the parent --------------------------------------------------------------

sub _unescape {
    my ($text) = @_;
    $text =~ s/\\(.)/$1 eq 'n' ? "\n" : $1 eq 't' ? "\t" : $1/ge;
    return $text;
}

# Fields each tag carries; FIGURE any number.
my %FIELDS = (CHECK => 3, SKIP => 2, NOTE => 1);

sub read_checks {
    my ($output, $prefix) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my %r = (checks => 0, notes => [], figures => []);
    my @other;
    for my $line (split /\n/, $output) {
        my ($tag, @f) = $line =~ /\A\x1e(CHECK|SKIP|NOTE|FIGURE)\t(.*)\z/
            ? ($1, map { _unescape($_) } split /\t/, $2, -1) : ();
        if (!$tag || ($FIELDS{$tag} && @f != $FIELDS{$tag})
                  || ($tag eq 'CHECK' && $f[0] !~ /\A[01]\z/)) {
            push @other, $line;
        } elsif ($tag eq 'CHECK') {
            $r{checks}++;
            ok($f[0], "$prefix: $f[1]") or diag($f[2]);
        } elsif ($tag eq 'SKIP') {
            $r{checks}++;
            Test::More->builder->skip("$prefix: $f[0]: $f[1]");
        } elsif ($tag eq 'NOTE') {
            note("$prefix: $f[0]");
            push @{$r{notes}}, $f[0];
        } else {
            push @{$r{figures}}, \@f;
        }
    }
    $r{output} = join "\n", @other;
    return \%r;
}

sub checks_in_child {
    my ($prefix, $code, $timeout) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $r = in_child($code, timeout => $timeout);
    my $read = read_checks($r->{output}, $prefix);
    ok(!$r->{timed_out}, "$prefix: finished within its time limit of $timeout s")
        or diag("output:\n$read->{output}");
    is($r->{signal}, 0, "$prefix: not killed by a signal");
    is($r->{exit}, 0, "$prefix: ran to its end") or diag("output:\n$read->{output}");
    ok($read->{checks} > 0, "$prefix: reported its checks");
    return $read;
}

1;

<?php

declare(strict_types=1);

// The second MariaDB connection of a real deadlock (tests only; started by ReverseLocker). In its own
// process, because the first connection is blocked inside Pimcore's save() while this one acts:
// 1. begin, write `ballast` rows (so that InnoDB picks the other transaction as the victim: it rolls
//    back the one with fewer changes), run the `first` statements (take row locks), print "locked";
// 2. wait until another transaction is in LOCK WAIT (the save, blocked on a row locked in step 1), read
//    from information_schema.INNODB_TRX, never from a clock (and at most 30 s);
// 3. run `second`, which wants a row that transaction holds: a cycle, which InnoDB breaks at once;
// 4. commit (or roll back if this one was the victim) and print the outcome.
// Usage: php lock-in-reverse.php <DBAL URL> <JSON {first: [sql...], second: sql, ballast: n}>

use Doctrine\DBAL\Exception\DeadlockException;
use Pimingestd\PimcoreBundle\Tests\Stubs\StandIn;

require \dirname(__DIR__, 2) . '/bootstrap.php';

[, $url, $json] = $argv;
$plan = json_decode($json, true, 512, \JSON_THROW_ON_ERROR);
$db = StandIn::connect($url);
$db->executeStatement('SET SESSION innodb_lock_wait_timeout = 50');
$db->executeStatement('CREATE TABLE IF NOT EXISTS stub_ballast (id int unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY, pad varchar(100)) ENGINE=InnoDB');
$db->beginTransaction();
for ($i = 0; $i < (int) ($plan['ballast'] ?? 0); ++$i) {
    $db->executeStatement("INSERT INTO stub_ballast (pad) VALUES ('ballast')");
}
foreach ($plan['first'] as $sql) {
    $db->executeStatement($sql);
}
echo "locked\n";
$me = (int) $db->fetchOne('SELECT CONNECTION_ID()');
for ($polls = 0; ; ++$polls) {
    $waiting = (int) $db->fetchOne("SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT' AND trx_mysql_thread_id <> ?", [$me]);
    if ($waiting > 0) {
        break;
    }
    if ($polls > 200) {
        echo "nobody waited\n";
        exit(1);
    }
    // InnoDB refreshes INNODB_TRX only when it was not read for 0.1 s: poll slower than that.
    usleep(150000);
}
try {
    $db->executeQuery($plan['second'])->fetchAllAssociative();
    $db->commit();
    $db->executeStatement('DELETE FROM stub_ballast');
    echo "committed\n";
} catch (DeadlockException $e) {
    $db->close();
    echo "victim\n";
}

<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Migrations;

use Doctrine\DBAL\Schema\Schema;
use Doctrine\Migrations\AbstractMigration;
use Pimingestd\PimcoreBundle\Ledger\Schema as LedgerSchema;

/**
 * Ledger tables made before the bundle set their table options (utf8mb3 under DBAL 3, where Pimcore's
 * `sql_mode=''` stores a 4-byte character as `?`) become utf8mb4 with Pimcore's collation, as
 * `pimingest:setup` converts them. Nothing to do on a fresh database or on SQLite.
 */
final class Version20261206000000 extends AbstractMigration
{
    public function getDescription(): string
    {
        return 'pimingest ledger: utf8mb4 tables';
    }

    public function up(Schema $schema): void
    {
        foreach (LedgerSchema::charsetFixes($this->connection) as $sql) {
            $this->addSql($sql);
        }
    }
}

<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Migrations;

use Doctrine\DBAL\Schema\Schema;
use Doctrine\Migrations\AbstractMigration;
use Pimingestd\PimcoreBundle\Ledger\Schema as LedgerSchema;

/**
 * The data_object applier records its progress per record (README.md, "Exactly once"): the marks table.
 * `pimingest:setup` creates the same table.
 */
final class Version20261207000000 extends AbstractMigration
{
    public function getDescription(): string
    {
        return 'pimingest ledger: pimingest_mark (per-record progress of the data_object applier)';
    }

    public function up(Schema $schema): void
    {
        if (!$schema->hasTable(LedgerSchema::MARK)) {
            LedgerSchema::marks($schema);
        }
    }

    public function down(Schema $schema): void
    {
        $schema->dropTable(LedgerSchema::MARK);
    }
}

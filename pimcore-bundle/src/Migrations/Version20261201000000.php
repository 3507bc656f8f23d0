<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Migrations;

use Doctrine\DBAL\Schema\Schema;
use Doctrine\Migrations\AbstractMigration;
use Pimingestd\PimcoreBundle\Ledger\Schema as LedgerSchema;

/**
 * Creates the ledger tables (Pimcore's convention: bundles ship Doctrine migrations). The same
 * definition as `pimingest:setup`. doctrine/migrations is not installable on the development machines,
 * so this class is not run by the tests there; the schema it builds is.
 */
final class Version20261201000000 extends AbstractMigration
{
    public function getDescription(): string
    {
        return 'pimingest ledger: pimingest_ingestion, pimingest_chunk, pimingest_record';
    }

    public function up(Schema $schema): void
    {
        LedgerSchema::define($schema);
    }

    public function down(Schema $schema): void
    {
        foreach ([LedgerSchema::RECORD, LedgerSchema::CHUNK, LedgerSchema::INGESTION] as $table) {
            $schema->dropTable($table);
        }
    }
}

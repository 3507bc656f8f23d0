<?php

declare(strict_types=1);

namespace Pimingestd\PimcoreBundle\Migrations;

use Doctrine\DBAL\Schema\Schema;
use Doctrine\Migrations\AbstractMigration;
use Pimingestd\PimcoreBundle\Ledger\Schema as LedgerSchema;

/**
 * Creates the ledger tables that do not exist yet (Pimcore's convention: bundles ship Doctrine migrations; the
 * extension registers this folder in `doctrine_migrations.migrations_paths`). The same definition as
 * `pimingest:setup`, which may have made them already. doctrine/migrations is not packaged by Debian: the tests
 * run this class as its DbalExecutor does (tests/Application/src/MigrationRunner.php).
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

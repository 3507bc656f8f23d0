<?php

declare(strict_types=1);

/*
 * doctrine/migrations is not packaged by Debian, so the tests run the bundle's migrations with this stand-in
 * for its `AbstractMigration` (loaded only where the real class is absent) and MigrationRunner, which does
 * what its DbalExecutor does for `doctrine:migrations:migrate`. Both were written from reading
 * doctrine/migrations 3.x (src/AbstractMigration.php, src/Version/DbalExecutor.php,
 * src/Provider/DBALSchemaDiffProvider.php), keeping only what the bundle's migrations use: the constructor's
 * connection, schema manager and platform, addSql(), getSql(), freeze(), the checks and the pre/post hooks.
 */

namespace Doctrine\Migrations;

use Doctrine\DBAL\Connection;
use Doctrine\DBAL\Schema\Schema;
use Psr\Log\LoggerInterface;

if (!class_exists(AbstractMigration::class)) {
    abstract class AbstractMigration
    {
        /** @var Connection */
        protected $connection;

        /** @var \Doctrine\DBAL\Schema\AbstractSchemaManager<\Doctrine\DBAL\Platforms\AbstractPlatform> */
        protected $sm;

        /** @var \Doctrine\DBAL\Platforms\AbstractPlatform */
        protected $platform;

        /** @var list<array{string, array<mixed>, array<mixed>}> */
        private array $planned = [];

        private bool $frozen = false;

        public function __construct(Connection $connection, private readonly LoggerInterface $logger)
        {
            $this->connection = $connection;
            $this->sm = $connection->createSchemaManager();
            $this->platform = $connection->getDatabasePlatform();
        }

        public function isTransactional(): bool
        {
            return true;
        }

        public function getDescription(): string
        {
            return '';
        }

        public function warnIf(bool $condition, string $message = 'Unknown Reason'): void
        {
            if ($condition) {
                $this->logger->warning($message);
            }
        }

        public function abortIf(bool $condition, string $message = 'Unknown Reason'): void
        {
            if ($condition) {
                throw new \RuntimeException("migration aborted: {$message}");
            }
        }

        public function preUp(Schema $schema): void
        {
        }

        public function postUp(Schema $schema): void
        {
        }

        public function preDown(Schema $schema): void
        {
        }

        public function postDown(Schema $schema): void
        {
        }

        abstract public function up(Schema $schema): void;

        public function down(Schema $schema): void
        {
            $this->abortIf(true, sprintf('No down() migration implemented for "%s"', static::class));
        }

        /**
         * @param array<mixed> $params
         * @param array<mixed> $types
         */
        protected function addSql(string $sql, array $params = [], array $types = []): void
        {
            if ($this->frozen) {
                throw new \LogicException('addSql() after the migration ran');
            }
            $this->planned[] = [$sql, $params, $types];
        }

        /** @return list<array{string, array<mixed>, array<mixed>}> */
        public function getSql(): array
        {
            return $this->planned;
        }

        public function freeze(): void
        {
            $this->frozen = true;
        }

        protected function write(string $message): void
        {
            $this->logger->notice($message);
        }
    }
}
